#!/bin/sh
# The administrator (and the platform's vhost) come from the environment: no guest, no
# default password. The platform's own users are provisioned by `eventshop provision`.
set -eu
: "${RABBITMQ_ADMIN_USER:?set RABBITMQ_ADMIN_USER}"
: "${RABBITMQ_ADMIN_PASSWORD:?set RABBITMQ_ADMIN_PASSWORD}"
cat >/etc/rabbitmq/rabbitmq.conf <<CONF
default_user = ${RABBITMQ_ADMIN_USER}
default_pass = ${RABBITMQ_ADMIN_PASSWORD}
default_vhost = ${RABBITMQ_VHOST:-eventshop}
default_user_tags.administrator = true
loopback_users = none
log.console = true
CONF
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /etc/rabbitmq
exec su rabbitmq -s /bin/sh -c "exec rabbitmq-server"
