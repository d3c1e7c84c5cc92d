# Sourced by the run scripts of docs/results/: `timed OUT NAME COMMAND...` runs COMMAND with its output in
# OUT/NAME.log, and writes when it started, how long it took and the load average before and after to
# OUT/timing.txt (what every results folder says of its cost).
timed() {
    local out=$1 name=$2
    shift 2
    echo "== $name: start $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/timing.txt"
    local start
    start=$(date +%s)
    "$@" > "$out/$name.log" 2>&1
    echo "== $name: $(( $(date +%s) - start )) s, end load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/timing.txt"
}
