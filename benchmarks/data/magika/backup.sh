#!/usr/bin/env bash
# Back up the greenhouse logger's readings to the archive host, keeping 30 days there.
set -euo pipefail

SOURCE="${SOURCE:-/var/log/greenhouse}"
ARCHIVE_HOST="${ARCHIVE_HOST:-archive.example.org}"
ARCHIVE_DIR="${ARCHIVE_DIR:-/srv/archive/greenhouse}"
KEEP_DAYS="${KEEP_DAYS:-30}"
LOG="/var/log/greenhouse-backup.log"

log() {
    printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" | tee -a "$LOG"
}

usage() {
    cat <<USAGE
usage: $(basename "$0") [-n] [-k DAYS]
  -n        dry run: list what would be copied and removed
  -k DAYS   days of archives to keep on the host (default $KEEP_DAYS)
USAGE
}

dry_run=0
while getopts "nk:h" option; do
    case "$option" in
        n) dry_run=1 ;;
        k) KEEP_DAYS="$OPTARG" ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

if [[ ! -d "$SOURCE" ]]; then
    log "no such directory: $SOURCE"
    exit 1
fi

stamp="$(date -u +%Y%m%d)"
bundle="$(mktemp -d)/readings-$stamp.tar.gz"
trap 'rm -rf "$(dirname "$bundle")"' EXIT

log "packing $SOURCE into $bundle"
tar -czf "$bundle" -C "$SOURCE" .

if (( dry_run )); then
    log "dry run: would copy $(du -h "$bundle" | cut -f1) to $ARCHIVE_HOST:$ARCHIVE_DIR"
    ssh "$ARCHIVE_HOST" "find '$ARCHIVE_DIR' -name 'readings-*.tar.gz' -mtime +$KEEP_DAYS -print"
    exit 0
fi

for attempt in 1 2 3; do
    if scp -q "$bundle" "$ARCHIVE_HOST:$ARCHIVE_DIR/"; then
        log "copied $(basename "$bundle") (attempt $attempt)"
        break
    fi
    log "copy failed (attempt $attempt), retrying in $((attempt * 10)) s"
    sleep $((attempt * 10))
done

ssh "$ARCHIVE_HOST" "find '$ARCHIVE_DIR' -name 'readings-*.tar.gz' -mtime +$KEEP_DAYS -delete"
log "removed archives older than $KEEP_DAYS days"
