# Shell functions shared by the bench-* scripts (sourced, not run).

# rss_sampler PID OUT: every 50 ms, the VmRSS (KiB) of PID plus its direct children; the peak
# goes to OUT. Runs until killed or PID exits.
rss_sampler() {
    set +e
    local pid=$1 out=$2 peak=0 total c k v _ kids
    echo 0 >"$out"
    while [[ -d /proc/$pid ]]; do
        total=0
        kids=()
        read -r -a kids 2>/dev/null <"/proc/$pid/task/$pid/children"
        for c in "$pid" "${kids[@]}"; do
            while read -r k v _; do
                if [[ "$k" == VmRSS: ]]; then
                    total=$((total + v))
                    break
                fi
            done 2>/dev/null <"/proc/$c/status"
        done
        if ((total > peak)); then
            peak=$total
            echo "$peak" >"$out"
        fi
        sleep 0.05
    done
}
