#!/bin/sh
# What the official mysql image's entrypoint does, for MariaDB from Debian: initialize the datadir, start a
# socket-only server to create the root password, database and user from MYSQL_* variables, stop it, then
# run the real server. Both servers log "ready for connections", which is what MySqlContainer waits for (twice).
# Nothing stays open: root (localhost and %) needs MYSQL_ROOT_PASSWORD (a new one per session), the unix_socket
# login mariadb-install-db makes for `mysql` is dropped, the app's user gets its databases only. The passwords
# reach the client through a pipe (echo is a shell builtin), never a command line.
set -eu
: "${MYSQL_ROOT_PASSWORD:?MYSQL_ROOT_PASSWORD is required}"
ARGS="--user=mysql --skip-name-resolve --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=2"
ARGS="$ARGS --secure-file-priv=/var/lib/mysql-files"  # LOAD DATA / INTO OUTFILE only there
mkdir -p /var/lib/mysql-files && chown mysql:mysql /var/lib/mysql-files && chmod 700 /var/lib/mysql-files
mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
mariadbd $ARGS --skip-networking --socket=/run/mysqld/init.sock &
pid=$!
for _ in $(seq 300); do
    mariadb --socket=/run/mysqld/init.sock -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
done
{
    echo "DROP USER IF EXISTS 'mysql'@'localhost';"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('${MYSQL_ROOT_PASSWORD}');"
    echo "CREATE USER 'root'@'%' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD}';"
    echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
    if [ -n "${MYSQL_DATABASE:-}" ]; then
        echo "CREATE DATABASE IF NOT EXISTS \`${MYSQL_DATABASE}\` CHARACTER SET utf8mb4;"
    fi
    if [ -n "${MYSQL_USER:-}" ]; then
        echo "CREATE USER '${MYSQL_USER}'@'%' IDENTIFIED BY '${MYSQL_PASSWORD:-}';"
        [ -z "${MYSQL_DATABASE:-}" ] || echo "GRANT ALL ON \`${MYSQL_DATABASE}\`.* TO '${MYSQL_USER}'@'%';"
        [ -z "${MYSQL_DATABASE:-}" ] || echo "GRANT ALL ON \`test_${MYSQL_DATABASE}\`.* TO '${MYSQL_USER}'@'%';"
    fi
    echo "FLUSH PRIVILEGES;"
} | mariadb --socket=/run/mysqld/init.sock -uroot
kill "$pid"
wait "$pid" || true
exec mariadbd $ARGS --bind-address=0.0.0.0 --port=3306
