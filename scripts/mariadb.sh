#!/usr/bin/env bash
# Makes sure a MariaDB answers at DATABASE_URL (default mysql://root@127.0.0.1:3306/test).
# If nothing answers on a local address, starts Debian's mariadb-server, installing it first
# when it is missing. Prints what is missing when it cannot fix it.
set -euo pipefail

url="${DATABASE_URL:-mysql://root@127.0.0.1:3306/test}"
hostport="${url#*://}"; hostport="${hostport%%/*}"; hostport="${hostport##*@}"
host="${hostport%%:*}"; port="${hostport##*:}"
[ "$port" = "$hostport" ] && port=3306

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; }

if answers; then
  exit 0
fi
case "$host" in
  127.0.0.1|localhost) ;;
  *) echo "mariadb: nothing answers at $host:$port (from DATABASE_URL); start that database or unset DATABASE_URL to use a local one" >&2; exit 1 ;;
esac

if [ ! -x /usr/sbin/mariadbd ]; then
  echo "mariadb: installing Debian's mariadb-server"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mariadb-server >/dev/null
fi
echo "mariadb: starting /usr/sbin/mariadbd"
if [ "$(id -u)" -eq 0 ]; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
else
  sudo start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
fi
for _ in $(seq 1 60); do
  if answers; then
    # A fresh Debian install lets root in over the unix socket only; also allow the
    # password-less TCP login that the default DATABASE_URL uses (a development setup).
    mariadb -uroot -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD(''); CREATE DATABASE IF NOT EXISTS test" 2>/dev/null || true
    exit 0
  fi
  sleep 0.5
done
echo "mariadb: started, but nothing answers at $host:$port after 30 s; see /var/log/mysql" >&2
exit 1
