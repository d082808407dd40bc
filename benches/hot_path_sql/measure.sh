#!/usr/bin/env bash
# The delivery hot path's SQL without the daemon: pgbench runs the claim and
# the completion (with its attempt row) of 50 rows per transaction on 2
# connections, and this prints deliveries/s, PostgreSQL's CPU and the WAL per
# delivery. It backs the figures of docs/benchmarks.md (2026-12-02 (2)).
#
#   measure.sh SCRIPT [TRANSACTIONS_PER_CLIENT] [VARIANT]
#
# MODE=prepared plans each statement once per connection, as the daemon's
# prepared statements do (default: simple, as the figures before issue 27).
#
# SCRIPT: a (the daemon's design), b (a narrow lease table instead of the
# claim's update), a_noattempt (no attempt row), split (issue 27 (b): ready
# and lease tables, the wide row written once at the outcome, HOT), lazy
# (issue 27 (c): split with the outcome in the attempt row only). hot
# (issue 27 (b'): split's ready table, the lease kept in the wide row and
# its updates HOT, a narrow in-flight table beside it). Besides
# the figures it prints the updates of the wide table and how many were HOT.
# enqueue_a / enqueue_split: the INSERT side of a and split/lazy (50 rows a
# statement; "delivered" then counts rows enqueued). VARIANT changes the schema
# for the run and back: ff50..ff100 (fillfactor), fk (the attempt rows'
# foreign key of migrations 1-8, restored for the run). It needs a throwaway
# database migrated by `plausible-webhooks migrate` over
# sql/fixtures/plausible_fixture.sql with one site and one webhook, on a local
# cluster this user can read /proc of (PGHOST, PGPORT, PGUSER, PGDATABASE as
# for psql; PGDATA for the postmaster's pid). It TRUNCATEs the queue.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
script=$1; t=${2:-200}; variant=${3:-}
: "${PGDATA:?set PGDATA to the data directory of the cluster}"
P=(psql -X -q -v ON_ERROR_STOP=1)
ddl() { [ -n "$1" ] && "${P[@]}" -c "$1" >/dev/null || true; }
case "$variant" in
  ff*) on="ALTER TABLE webhook_deliveries SET (fillfactor = ${variant#ff})"; off="ALTER TABLE webhook_deliveries SET (fillfactor = 60)" ;;
  fk) on="ALTER TABLE webhook_delivery_attempts ADD CONSTRAINT attempts_fk FOREIGN KEY (delivery_id) REFERENCES webhook_deliveries (id) ON DELETE CASCADE"
      off="ALTER TABLE webhook_delivery_attempts DROP CONSTRAINT attempts_fk" ;;
  "") on=""; off="" ;;
  *) echo "unknown variant $variant" >&2; exit 2 ;;
esac
ddl "$on"; trap 'ddl "$off"' EXIT
inflight=$([ "${script:0:1}" = a ] && echo delivering || echo pending)
case "$script" in
  split|lazy|hot|enqueue_split) seed=seed_split; wide=split_deliveries ;;
  *) seed=seed; wide=webhook_deliveries ;;
esac
"${P[@]}" -f "$here/payload.sql" >/dev/null
"${P[@]}" -v n=$((t * 2 * 50 + 500)) -v inflight_status="$inflight" -f "$here/$seed.sql" >/dev/null 2>&1
upd() { "${P[@]}" -tAc "SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = '$wide'"; }
u0=$(upd)
pm=$(head -1 "$PGDATA/postmaster.pid")
cpu() {
  python3 - "$pm" <<'PY'
import os, sys
pm = int(sys.argv[1]); hz = os.sysconf('SC_CLK_TCK')
def st(p): return open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()
s = st(pm); tot = sum(int(x) for x in s[11:15])  # the postmaster and its reaped children
for p in filter(str.isdigit, os.listdir('/proc')):
    try:
        s = st(p)
        if int(s[1]) == pm: tot += int(s[11]) + int(s[12])
    except (OSError, IndexError): pass
print(tot / hz)
PY
}
w0=$("${P[@]}" -tAc "SELECT pg_current_wal_lsn()"); c0=$(cpu); s0=$(date +%s.%N)
pgbench -n -M "${MODE:-simple}" -c 2 -j 2 -t "$t" -f "$here/$script.sql" | grep -E "failed" || true
s1=$(date +%s.%N); c1=$(cpu); w1=$("${P[@]}" -tAc "SELECT pg_current_wal_lsn()")
# Each delivery ends with its attempt row (a_noattempt: its status).
counted="SELECT count(*) FROM webhook_delivery_attempts WHERE instance = 'x'"
[ "$script" = a_noattempt ] && counted="SELECT count(*) FROM webhook_deliveries WHERE status = 'success'"
# enqueue_*: the rows inserted.
[ "${script%%_*}" = enqueue ] && counted="SELECT count(*) FROM $wide WHERE event_type = 'enq'"
done=$("${P[@]}" -tAc "$counted")
sleep 1; u1=$(upd)
wal=$("${P[@]}" -tAc "SELECT pg_wal_lsn_diff('$w1', '$w0')")
python3 -c "
n, el, cpu, wal = $done, $s1 - $s0, $c1 - $c0, $wal
u0, h0, u1, h1 = map(int, '$u0 $u1'.split())
print(f'$script${variant:+ $variant}: {n} delivered in {el:.2f} s = {n / el:,.0f}/s; '
      f'PostgreSQL {cpu / n * 1e6:.0f} µs of CPU and {wal / n / 1024:.2f} KiB of WAL per delivery; '
      f'$wide: {u1 - u0} updates, {h1 - h0} HOT')"
