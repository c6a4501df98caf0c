"""Uses of other libraries' non-public APIs, one module per library, each with the reason it is needed."""
