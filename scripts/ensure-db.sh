#!/usr/bin/env bash
# Make sure the local PostgreSQL and MariaDB servers answer; start whichever does not.
set -u

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || python3 - <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(); s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", 5432)) == 0 else 1)
PY
}
my_up() { mariadb-admin -h 127.0.0.1 -uroot --connect-timeout=2 ping >/dev/null 2>&1 || mysqladmin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; }

if ! pg_up; then
  echo "ensure-db: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! my_up; then
  echo "ensure-db: starting MariaDB" >&2
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
for _ in $(seq 1 60); do
  if pg_up && my_up; then
    echo "ensure-db: PostgreSQL and MariaDB answer" >&2
    exit 0
  fi
  sleep 1
done
pg_up || echo "ensure-db: PostgreSQL does not answer on 127.0.0.1:5432" >&2
my_up || echo "ensure-db: MariaDB does not answer on 127.0.0.1:3306" >&2
exit 1
