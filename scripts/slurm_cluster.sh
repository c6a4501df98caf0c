#!/usr/bin/env bash
# SLURM cluster on this one machine (slurm-wlm 22.05, Debian 12) for CI and local testing of the
# submitit launcher, without systemd or cgroups.  Must run as root.
#   scripts/slurm_cluster.sh start             # install packages if missing, write configs, start daemons
#   scripts/slurm_cluster.sh start --nodes 2   # the same cluster as 2 nodes, node1 and node2 (see below)
#   scripts/slurm_cluster.sh stop              # stop slurmd(s), slurmctld, slurmdbd, MariaDB and munged
#   scripts/slurm_cluster.sh status            # daemons, sinfo / squeue
# Sets up munged, MariaDB (socket only) + slurmdbd (so sacct, which submitit reads, works),
# slurmctld and slurmd with one node `hostname -s` advertising 8 CPUs in partition `debug`.
# `start --nodes N` (N = 2..4) splits those CPUs over N nodes node1..nodeN, each a slurmd in a network namespace
# (`ip netns` sesemi-nodeI) and a UTS namespace of its own: hostname nodeI, address 10.77.0.1I on a veth into the
# bridge sesemi-br0 (10.77.0.1, no uplink, no forwarding: nothing else on any network is touched), where
# slurmctld is reached; /etc/hosts gets `nodeI` lines marked `# sesemi-slurm-nodes`. Plain `start` tears all of
# that down and returns to the single node. Changing the node set refuses while jobs are queued or running.
# `start` is idempotent. Logs: /var/log/slurm/*.log. Override SLURM_NODE_CPUS / SLURM_NODE_MEM_MB.
set -euo pipefail

CLUSTER_NAME=sesemi
PARTITION=debug
NODE_NAME=$(hostname -s)
NODE_CPUS=${SLURM_NODE_CPUS:-8}
NODE_MEM_MB=${SLURM_NODE_MEM_MB:-16000}
DEF_MEM_PER_CPU=1000
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=slurmdbpass

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
STATE_DIR=/var/lib/slurm
MYSQL_DATADIR=/var/lib/mysql
MYSQL_RUN=/run/mysqld
MYSQL_SOCKET=$MYSQL_RUN/mysqld.sock
MYSQL_PID=$MYSQL_RUN/mysqld.pid
MYSQL_LOG=$LOG_DIR/mariadb.log
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
MUNGE_LOG=/var/log/munge/munged.log
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server iproute2)
# Multi-node mode: namespaces, bridge and addresses (see the top).
BRIDGE=sesemi-br0
NET_PREFIX=10.77.0
CTLD_ADDR=$NET_PREFIX.1
NETNS_PREFIX=sesemi-
HOSTS_MARK='# sesemi-slurm-nodes'
NODES=1

CONFIG_CHANGED=0

# The daemons this script starts inherit none of its caller's file descriptors above stderr: one left open (e.g. the
# lock of `flock LOCKFILE scripts/slurm_cluster.sh start`, which slurmdbd kept) would stay held as long as they run.
for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
done
unset fd

log() { echo "[slurm_cluster] $*" >&2; }

die() {
    log "ERROR: $*"
    local f
    for f in "$MUNGE_LOG" "$MYSQL_LOG" "$LOG_DIR"/slurmdbd.log "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log "$LOG_DIR"/slurmd-*.log; do
        [[ -s $f ]] || continue
        log "---- last lines of $f"
        tail -n 15 "$f" >&2 || true
    done
    log "logs: $LOG_DIR/{slurmctld,slurmd,slurmdbd,mariadb}.log, $MUNGE_LOG"
    exit 1
}

# wait_for SECONDS COMMAND...: poll COMMAND every 0.5 s until it succeeds (1 on timeout).
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# pid_alive PIDFILE: the pid in PIDFILE is alive and runs the daemon the file is named after
# (guards against stale pid files whose pid was reused after a hard kill or reboot).
pid_alive() {
    local pid comm
    [[ -s $1 ]] || return 1
    pid=$(cat "$1")
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    case $(basename "$1" .pid) in
        mysqld) [[ $comm == mariadbd || $comm == mysqld ]] ;;
        *) [[ $comm == "$(basename "$1" .pid | cut -d- -f1)" ]] ;; # slurmd-node1.pid: slurmd
    esac
}

# stop_daemons NAME:PIDFILE...: SIGTERM every running daemon, wait up to 30 s, then SIGKILL.
stop_daemons() {
    local entry name pidfile pid pids=()
    for entry in "$@"; do
        name=${entry%%:*} pidfile=${entry#*:}
        if pid_alive "$pidfile"; then
            pid=$(cat "$pidfile")
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for pid in "${pids[@]}"; do
        if ! wait_for 30 bash -c "! kill -0 $pid"; then
            log "pid $pid did not exit after 30 s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for entry in "$@"; do
        rm -f "${entry#*:}"
    done
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    # Keep maintainer scripts from starting the daemons themselves: this script does it.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } || rc=$?
    ((added_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${missing[*]} failed"
}

# install_file DEST MODE OWNER: write stdin to DEST; set CONFIG_CHANGED=1 if content differs.
install_file() {
    local dest=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
    else
        mv "$tmp" "$dest"
        CONFIG_CHANGED=1
    fi
    chmod "$mode" "$dest"
    chown "$owner" "$dest"
}

# node_names: the SLURM node names of this mode, one a line.
node_names() {
    if ((NODES == 1)); then
        echo "$NODE_NAME"
    else
        seq -f 'node%g' 1 "$NODES"
    fi
}

# slurm_conf: slurm.conf of this mode (the single-node one unchanged; N nodes: own pid/log/spool per node).
slurm_conf() {
    local ctld_addr=127.0.0.1 node_files='' nodes
    nodes="NodeName=$NODE_NAME NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP"
    if ((NODES > 1)); then
        ctld_addr=$CTLD_ADDR
        node_files=%n
        nodes=$(for i in $(seq 1 "$NODES"); do
            echo "NodeName=node$i NodeAddr=$NET_PREFIX.1$i CPUs=$((NODE_CPUS / NODES)) RealMemory=$((NODE_MEM_MB / NODES)) State=UNKNOWN"
        done)
        nodes+=$'\n'"PartitionName=$PARTITION Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP"
    fi
    cat <<EOF
# Written by scripts/slurm_cluster.sh -- local $( ((NODES == 1)) && echo single-node || echo "$NODES-node") test cluster.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE_NAME($ctld_addr)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
# Short credential lifetime: a requeued job may start again after cred_expire seconds.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd${node_files:+/$node_files}
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd${node_files:+-$node_files}.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd${node_files:+-$node_files}.log
SlurmctldPort=6817
SlurmdPort=6818
# No cgroups available: plain /proc based process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
# Let the node advertise more CPUs than it physically has, so jobs run concurrently.
SlurmdParameters=config_overrides
DefMemPerCPU=$DEF_MEM_PER_CPU
ReturnToService=2
JobRequeue=1
MailProg=/bin/true
InactiveLimit=0
KillWait=10
# A loaded 2-core test machine can take more than the default 60 s to reap a cancelled job's processes (loader
# workers included); past this SLURM drains the node ("Kill task failed") and every later job pends.
UnkillableStepTimeout=180
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
SlurmctldDebug=info
SlurmdDebug=info
$nodes
EOF
}

write_configs() {
    local node
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$RUN_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
    chown slurm:slurm "$LOG_DIR" "$RUN_DIR" "$STATE_DIR" "$STATE_DIR/slurmctld"
    if ((NODES > 1)); then
        for node in $(node_names); do mkdir -p "$STATE_DIR/slurmd/$node"; done
    fi
    install_file "$CONF_DIR/slurm.conf" 644 root:root < <(slurm_conf) # not a pipe: CONFIG_CHANGED must stick
    install_file "$CONF_DIR/slurmdbd.conf" 600 slurm:slurm <<EOF
# Written by scripts/slurm_cluster.sh -- local single-node test cluster.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$DB_PASS
EOF
}

start_munge() {
    install -d -o munge -g munge -m 755 "$MUNGE_RUN"
    install -d -o munge -g munge -m 700 /etc/munge /var/log/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating munge key"
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    if pid_alive "$MUNGE_PID"; then
        return 0
    fi
    log "starting munged"
    rm -f "$MUNGE_RUN/munge.socket.2" "$MUNGE_RUN/munge.socket.2.lock" "$MUNGE_PID"
    runuser -u munge -- munged --pid-file="$MUNGE_PID" --log-file="$MUNGE_LOG"
    wait_for 20 bash -c 'munge -n | unmunge' || die "munged did not come up"
}

start_mariadb() {
    install -d -o mysql -g mysql -m 755 "$MYSQL_RUN"
    touch "$MYSQL_LOG"
    chown mysql:mysql "$MYSQL_LOG"
    if [[ ! -d $MYSQL_DATADIR/mysql ]]; then
        log "initialising MariaDB datadir $MYSQL_DATADIR"
        install -d -o mysql -g mysql -m 755 "$MYSQL_DATADIR"
        mariadb-install-db --user=mysql --datadir="$MYSQL_DATADIR" \
            --auth-root-authentication-method=socket >>"$MYSQL_LOG" 2>&1 ||
            die "mariadb-install-db failed"
    fi
    if ! pid_alive "$MYSQL_PID"; then
        log "starting MariaDB"
        rm -f "$MYSQL_SOCKET" "$MYSQL_PID"
        # Socket only (no TCP port): slurmdbd connects through $MYSQL_SOCKET.
        setsid mariadbd --user=mysql --datadir="$MYSQL_DATADIR" --socket="$MYSQL_SOCKET" \
            --pid-file="$MYSQL_PID" --log-error="$MYSQL_LOG" --skip-networking \
            --innodb-buffer-pool-size=64M </dev/null >>"$MYSQL_LOG" 2>&1 &
    fi
    wait_for 60 mariadb-admin --socket="$MYSQL_SOCKET" ping || die "MariaDB did not come up"
    mariadb --socket="$MYSQL_SOCKET" <<EOF || die "could not create database $DB_NAME"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

restart_slurm_if_config_changed() {
    ((CONFIG_CHANGED)) || return 0
    local pidfile
    for pidfile in "$RUN_DIR"/slurmd.pid "$RUN_DIR"/slurmd-*.pid "$RUN_DIR/slurmctld.pid"; do
        pid_alive "$pidfile" && break
    done
    if pid_alive "$pidfile"; then
        log "configuration changed: restarting running SLURM daemons"
        stop_slurm_daemons
    fi
}

start_slurmdbd() {
    if ! pid_alive "$RUN_DIR/slurmdbd.pid"; then
        log "starting slurmdbd"
        slurmdbd || die "slurmdbd failed to start"
    fi
    wait_for 60 sacctmgr -n list cluster || die "slurmdbd does not answer (sacctmgr list cluster)"
    if [[ -z $(sacctmgr -n -P list cluster format=cluster where name="$CLUSTER_NAME") ]]; then
        log "registering cluster $CLUSTER_NAME in slurmdbd"
        sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null || die "sacctmgr add cluster failed"
    fi
}

start_slurmctld() {
    if ! pid_alive "$RUN_DIR/slurmctld.pid"; then
        log "starting slurmctld"
        slurmctld || die "slurmctld failed to start"
    fi
    wait_for 60 scontrol ping || die "slurmctld does not answer (scontrol ping)"
}

# slurmd_pidfile NODE: the pid file of NODE's slurmd (SlurmdPidFile of slurm_conf).
slurmd_pidfile() {
    if ((NODES == 1)); then echo "$RUN_DIR/slurmd.pid"; else echo "$RUN_DIR/slurmd-$1.pid"; fi
}

start_slurmd() {
    local node
    for node in $(node_names); do
        pid_alive "$(slurmd_pidfile "$node")" && continue
        log "starting slurmd ($node)"
        if ((NODES == 1)); then
            slurmd || die "slurmd failed to start"
        else
            # Its own network namespace (address) and UTS namespace (hostname). nsenter, not `ip netns exec`:
            # that also remounts /sys, hiding /sys/fs/cgroup, without which slurmd does not start.
            nsenter --net=/run/netns/"$NETNS_PREFIX$node" unshare --uts sh -c "hostname $node && exec slurmd -N $node" ||
                die "slurmd of $node failed to start"
        fi
    done
}

# check_node_set NODES: refuse to change the cluster's nodes while jobs are queued or running (they would be lost).
check_node_set() {
    local now wanted jobs
    [[ -f $CONF_DIR/slurm.conf ]] && pid_alive "$RUN_DIR/slurmctld.pid" || return 0
    now=$(grep '^NodeName=' "$CONF_DIR/slurm.conf" || true)
    wanted=$(slurm_conf | grep '^NodeName=')
    [[ $now == "$wanted" ]] && return 0
    jobs=$(squeue -h -o '%i %T %j' 2>/dev/null || true)
    [[ -z $jobs ]] && return 0
    log "ERROR: the cluster's nodes would change (to: $(node_names | paste -sd' ')), but jobs are queued or running:"
    echo "$jobs" | sed 's/^/[slurm_cluster]   /' >&2
    log "wait for them to end or scancel them, then run this again; nothing was changed"
    exit 1
}

# setup_network: the bridge, one network namespace per node with a veth into the bridge, and /etc/hosts lines.
setup_network() {
    local i ns veth
    ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
    ip addr replace "$CTLD_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for i in $(seq 1 "$NODES"); do
        ns=${NETNS_PREFIX}node$i veth=${NETNS_PREFIX}veth$i
        [[ -e /run/netns/$ns ]] || ip netns add "$ns"
        ip link show "$veth" >/dev/null 2>&1 || ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" addr replace "$NET_PREFIX.1$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
    remove_hosts_lines
    for i in $(seq 1 "$NODES"); do
        echo "$NET_PREFIX.1$i node$i $HOSTS_MARK" >>/etc/hosts
    done
}

remove_hosts_lines() {
    local kept
    grep -q -- "$HOSTS_MARK" /etc/hosts || return 0
    kept=$(grep -v -- "$HOSTS_MARK" /etc/hosts)
    printf '%s\n' "$kept" >/etc/hosts # in place: /etc/hosts may be a mount point
}

# teardown_network: stop the nodes' slurmds and what is left in their namespaces, remove namespaces, veths,
# bridge and /etc/hosts lines (whatever node count they were made for).
teardown_network() {
    local pidfile ns pids
    for pidfile in "$RUN_DIR"/slurmd-*.pid; do
        [[ -e $pidfile ]] && stop_daemons "$(basename "$pidfile" .pid)":"$pidfile"
    done
    for ns in /run/netns/"$NETNS_PREFIX"node*; do
        [[ -e $ns ]] || continue
        ns=$(basename "$ns")
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [[ -n $pids ]]; then
            log "stopping the processes left in $ns: $(echo $pids)"
            kill -KILL $pids 2>/dev/null || true
        fi
        log "removing network namespace $ns"
        ip netns del "$ns" # its veth end goes with it, and the peer in the bridge too
    done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        log "removing bridge $BRIDGE"
        ip link del "$BRIDGE"
    fi
    remove_hosts_lines
}

node_state() { sinfo -h -N -n "$1" -o '%T' 2>/dev/null | head -n1; }

wait_node_ready() {
    local deadline=$((SECONDS + 90)) state node resumed
    for node in $(node_names); do
        resumed=0
        while :; do
            state=$(node_state "$node")
            case $state in
                idle | mixed | allocated | completing) break ;;
                *drain* | down* | fail*)
                    if ((!resumed)); then
                        log "node $node is $state: resuming it"
                        scontrol update nodename="$node" state=resume || true
                        resumed=1
                    fi
                    ;;
            esac
            ((SECONDS < deadline)) || die "node $node not ready (state: '${state:-none}')"
            sleep 0.5
        done
    done
    wait_for 30 sacct -n -X -a -S now-1minutes || die "sacct does not answer"
}

stop_slurm_daemons() {
    local pidfile entries=()
    for pidfile in "$RUN_DIR"/slurmd.pid "$RUN_DIR"/slurmd-*.pid; do
        [[ -e $pidfile ]] && entries+=("$(basename "$pidfile" .pid):$pidfile")
    done
    stop_daemons "${entries[@]}" slurmctld:"$RUN_DIR/slurmctld.pid" slurmdbd:"$RUN_DIR/slurmdbd.pid"
}

cmd_start() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    local t0=$SECONDS
    install_packages
    check_node_set
    write_configs
    restart_slurm_if_config_changed
    if ((NODES == 1 || CONFIG_CHANGED)); then
        teardown_network
    fi
    ((NODES == 1)) || setup_network
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    wait_node_ready
    log "cluster $CLUSTER_NAME up in $((SECONDS - t0)) s: partition $PARTITION, node(s) $(node_names | paste -sd' ') ($NODE_CPUS CPUs, ${NODE_MEM_MB} MB in all); logs in $LOG_DIR"
    sinfo
}

cmd_stop() {
    stop_slurm_daemons
    stop_daemons MariaDB:"$MYSQL_PID"
    stop_daemons munged:"$MUNGE_PID"
    log "stopped"
}

cmd_status() {
    local name pidfile
    for name in munged:$MUNGE_PID mariadb:$MYSQL_PID slurmdbd:$RUN_DIR/slurmdbd.pid \
        slurmctld:$RUN_DIR/slurmctld.pid "$RUN_DIR"/slurmd.pid "$RUN_DIR"/slurmd-*.pid; do
        [[ $name == *'*'* ]] && continue # no slurmd-<node>.pid
        [[ $name == *:* ]] || name=$(basename "$name" .pid):$name
        pidfile=${name#*:}
        if pid_alive "$pidfile"; then
            echo "${name%%:*}: running (pid $(cat "$pidfile"))"
        else
            echo "${name%%:*}: not running"
        fi
    done
    sinfo || true
    squeue || true
}

usage() {
    echo "usage: $0 {start [--nodes N]|stop|status}  (N: 1 to 4, default 1)" >&2
    exit 2
}

case ${1:-} in
    start)
        shift
        while (($#)); do
            case $1 in
                --nodes)
                    [[ ${2:-} =~ ^[1-4]$ ]] || usage
                    NODES=$2
                    shift 2
                    ;;
                *) usage ;;
            esac
        done
        cmd_start
        ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
