#!/usr/bin/env bash
# dbdrill CI gate: install dbdrill and the engines it runs, run the chosen drills on the embedded emulator,
# leave the reports in $DBDRILL_REPORT_DIR, exit non-zero when a drill violates a threshold.
#
#   ci/dbdrill-gate.sh                       # every drill
#   ci/dbdrill-gate.sh ttl_expiry region_outage -t max_rto=5s
#
# Environment:
#   DBDRILL_SPEC        what pip installs (default: dbdrill; e.g. "dbdrill @ git+https://.../dbdrill@v0.1.0",
#                       or "." inside a dbdrill checkout)
#   DBDRILL_REPORT_DIR  where journals, HTML reports and junit.xml go (default: dbdrill-reports)
#   DBDRILL_VENV        the virtualenv to use or create (default: .dbdrill-venv)
#   PYTHON              the interpreter for the venv (default: python3)
set -euo pipefail

spec=${DBDRILL_SPEC:-dbdrill}
report_dir=${DBDRILL_REPORT_DIR:-dbdrill-reports}
venv=${DBDRILL_VENV:-.dbdrill-venv}
python=${PYTHON:-python3}

# The real engines: PostgreSQL and PgBouncer from the distribution's packages.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pgbouncer >/dev/null 2>&1 \
   && [ ! -x /usr/sbin/pgbouncer ]; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends postgresql pgbouncer >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
"$venv/bin/python" -m pip install -q "$spec"

args=("$@")
[ ${#args[@]} -gt 0 ] || args=(all)
exec "$venv/bin/dbdrill" drill "${args[@]}" --report-dir "$report_dir"
