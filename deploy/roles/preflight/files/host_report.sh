# host_report.sh SOCKET_BUFFER_BYTES (run as `bash -s -- BYTES`): prints "key<TAB>value" lines about this host for preflight.json.
# Raises net.core.rmem_max/wmem_max to SOCKET_BUFFER_BYTES when this user may (root, or sudo without
# a password); never fails for it. Exits 0 whatever it could not read: absent values are left out.
set -u
target="$1"

kv() { printf '%s\t%s\n' "$1" "$2"; }

kv boot_id "$(cat /proc/sys/kernel/random/boot_id)"
kv nproc "$(nproc)"
kv mem_total_kib "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
kv kernel "$(uname -r)"
if command -v perf >/dev/null 2>&1; then kv perf true; else kv perf false; fi
if command -v chronyc >/dev/null 2>&1 && tracking="$(timeout 5 chronyc -c tracking 2>/dev/null)"; then
  kv chrony "$tracking"
fi

for key in rmem_max wmem_max; do
  file="/proc/sys/net/core/$key"
  before="$(cat "$file")"
  kv "${key}_before" "$before"
  if [ "$before" -lt "$target" ]; then
    if [ "$(id -u)" = 0 ]; then
      (echo "$target" >"$file") 2>/dev/null
    elif command -v sudo >/dev/null 2>&1; then
      sudo -n sysctl -qw "net.core.$key=$target" >/dev/null 2>&1
    fi
  fi
  kv "${key}_after" "$(cat "$file")"
done
exit 0
