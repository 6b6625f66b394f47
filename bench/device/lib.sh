# Sourced by check.sh and followup.sh (from the bundle's folder, with BUDGET set): the output
# folders, the step and run helpers, and the first step, which names the device.
#   $OUT/check.log   everything printed;   $R   the steps' files, packed into $OUT/results.tgz
#   step TITLE       packs $R and prints a header with the time used of $BUDGET seconds
#   run LIMIT CMD…   runs CMD for at most LIMIT seconds (less if the budget is short); never fails
B=$(pwd)
OUT=${OUT:-/tmp/llamacu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
R=${TMPDIR:-/tmp}/llamacu-results # the steps' files; packed into $OUT/results.tgz
rm -rf "$R" && mkdir -p "$R"
pack() { tar czf "$OUT/results.tgz.tmp" -C "$R" . && mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"; }
export LLAMACU_COMMIT=$(cat COMMIT 2>/dev/null || echo unknown)
# The binaries are built with -tags nofatbin: they load the bundle's one fatbin from here.
[ -f "$B/llamacu.fatbin" ] && export LLAMACU_FATBIN="$B/llamacu.fatbin"

step() { pack; printf '\n===== %s (%s, %d s of %d s used) =====\n' "$1" "$(date -u +%H:%M:%S)" "$SECONDS" "$BUDGET"; }
run() { # run LIMIT_SECONDS CMD...: never fails the script, reports the status
  local lim=$1; shift
  local left=$((BUDGET - SECONDS - 15)) # 15 s: --kill-after and the final listing
  if [ "$left" -lt "$lim" ]; then lim=$left; fi
  if [ "$lim" -lt 5 ]; then echo "[skipped, the ${BUDGET} s budget is spent: $*]"; return 0; fi
  timeout --kill-after=10 "$lim" "$@"; local rc=$?
  echo "[exit $rc: $*]"
}

step "device"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
  nvidia-smi -L
else
  echo "no nvidia-smi: $(cat BUILD 2>/dev/null || echo 'unknown build')"
fi
echo "commit $LLAMACU_COMMIT"

