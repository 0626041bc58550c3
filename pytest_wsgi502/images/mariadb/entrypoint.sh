#!/bin/sh
# What the official mysql image's entrypoint does, for MariaDB from Debian: initialize the datadir, start a
# socket-only server to create the root password, database and user from MYSQL_* variables, stop it, then
# run the real server. Both servers log "ready for connections", which is what MySqlContainer waits for (twice).
set -eu
: "${MYSQL_ROOT_PASSWORD:?MYSQL_ROOT_PASSWORD is required}"
ARGS="--user=mysql --skip-name-resolve --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=2"
mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db --auth-root-authentication-method=normal \
    >/dev/null
mariadbd $ARGS --skip-networking --socket=/run/mysqld/init.sock &
pid=$!
for _ in $(seq 300); do
    mariadb --socket=/run/mysqld/init.sock -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
done
{
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD}';"
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
