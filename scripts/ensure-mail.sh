#!/usr/bin/env bash
# Real local mail servers for the e-mail channel's tests: Debian's dovecot (IMAP with IDLE) and
# postfix (SMTP), on 127.0.0.1 only, for the domain clawpen.test.
#
# For Debian bookworm as root without systemd (developer machines and CI). Installs the packages
# when missing (apt-get, non-interactive, without starting the distribution's own services),
# writes its own configuration (nothing under /etc/dovecot or /etc/postfix is touched; postfix
# runs as a second instance with its config in /etc/postfix-clawpen), starts both daemons
# directly, or reloads them when they already run. Safe to run twice; prints one line when ready.
#
#   IMAP  127.0.0.1:143 (STARTTLS)  127.0.0.1:993 (TLS)       dovecot, IDLE
#   SMTP  127.0.0.1:25   inbound, no AUTH: "the internet" delivering to @clawpen.test
#         127.0.0.1:587  submission, STARTTLS then AUTH required
#         127.0.0.1:465  submission over TLS, AUTH required
#   users agent@, alice@, mallory@clawpen.test; password "<name>-secret" (agent-secret, ...)
#   TLS   a self-signed certificate for 127.0.0.1/localhost: $MAIL_DIR/tls/cert.pem (the CA file)
#
# Delivery: postfix hands mail for clawpen.test to dovecot over LMTP (127.0.0.1:24) into Maildirs
# under $MAIL_DIR/mail, so a message lands where IMAP serves it and IDLE sees it at once. Mail for
# any other domain is refused at once (default_transport = error): nothing leaves this machine.
#
# DKIM/DMARC: this server does not verify signatures (no milter). Authentication-Results is the
# receiving server's verdict, and on a real receiving server the topmost one is its own; postfix
# here prepends only a Received: line, so a message a test delivers on port 25 keeps the topmost
# Authentication-Results header the test wrote (authserv-id mx.clawpen.test, this server's
# name). That is how the tests play both a receiving server that says dkim=pass and a sender who
# forges such a header lower down or under another authserv-id.
#
# SMTP temporary failures: the submission ports check each recipient against the texthash map
# $MAIL_DIR/defer (empty here). A test writes "alice@clawpen.test 451 4.7.1 try again later"
# into it and runs `postfix -c /etc/postfix-clawpen reload`; empty it and reload to deliver.
#
# XOAUTH2: dovecot accepts XOAUTH2/OAUTHBEARER (IMAP, and SMTP AUTH through postfix's dovecot
# SASL) by asking an OAuth2 introspection endpoint at http://127.0.0.1:18089/introspect
# (POST token=...; a JSON answer {"active": true, "username": "agent@clawpen.test"}). The tests
# serve that endpoint, and the token endpoint google-auth refreshes against, on that port.
set -euo pipefail

MAIL_DIR=${CLAWPEN_MAIL_DIR:-/var/lib/clawpen-mail}
PF_CONF=/etc/postfix-clawpen
PF_QUEUE=/var/spool/postfix-clawpen
PF_DATA=/var/lib/postfix-clawpen
OAUTH_PORT=18089
USERS=(agent alice mallory)
WAIT_SECONDS=30

say() { echo "ensure-mail: $*"; }

# -- packages ---------------------------------------------------------------------------------
missing=()
command -v dovecot >/dev/null || missing+=(dovecot-imapd)
[[ -e /usr/lib/dovecot/lmtp ]] || missing+=(dovecot-lmtpd)
command -v postfix >/dev/null || missing+=(postfix)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # postfix's own configuration is not wanted: this script writes a separate instance's
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # the packages must not start the distribution's daemons on the ports used here
  policy_added=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  ((policy_added)) && rm -f /usr/sbin/policy-rc.d
fi

# -- accounts, directories, certificate -------------------------------------------------------
id clawpenmail >/dev/null 2>&1 ||
  useradd --system --no-create-home --home-dir "$MAIL_DIR/mail" --shell /usr/sbin/nologin clawpenmail
install -d -m 0755 "$MAIL_DIR" "$MAIL_DIR/tls" "$MAIL_DIR/run" "$MAIL_DIR/state"
install -d -m 0750 -o clawpenmail -g clawpenmail "$MAIL_DIR/mail"
if [[ ! -s $MAIL_DIR/tls/cert.pem ]]; then
  openssl req -x509 -nodes -days 3650 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:mx.clawpen.test" \
    -keyout "$MAIL_DIR/tls/key.pem" -out "$MAIL_DIR/tls/cert.pem" 2>/dev/null
  chmod 0600 "$MAIL_DIR/tls/key.pem"
  chmod 0644 "$MAIL_DIR/tls/cert.pem" # adapters, running as uids of their own, read it
fi
{
  for user in "${USERS[@]}"; do echo "$user@clawpen.test:{PLAIN}$user-secret::::::"; done
} >"$MAIL_DIR/users"
chmod 0640 "$MAIL_DIR/users"
chgrp dovecot "$MAIL_DIR/users"
[[ -e $MAIL_DIR/defer ]] || : >"$MAIL_DIR/defer"

# -- dovecot ----------------------------------------------------------------------------------
install -d -m 0755 "$PF_QUEUE" # dovecot's SASL socket for postfix lives in its private/ dir
cat >"$MAIL_DIR/oauth2.conf" <<EOF
introspection_mode = post
introspection_url = http://127.0.0.1:$OAUTH_PORT/introspect
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
EOF
cat >"$MAIL_DIR/dovecot.conf" <<EOF
# written by scripts/ensure-mail.sh
instance_name = clawpen-mail
base_dir = $MAIL_DIR/run/
state_dir = $MAIL_DIR/state
protocols = imap lmtp
listen = 127.0.0.1
log_path = $MAIL_DIR/dovecot.log
ssl = yes
ssl_cert = <$MAIL_DIR/tls/cert.pem
ssl_key = <$MAIL_DIR/tls/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
mail_location = maildir:$MAIL_DIR/mail/%d/%n
postmaster_address = postmaster@clawpen.test
first_valid_uid = 100
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u $MAIL_DIR/users
}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $MAIL_DIR/oauth2.conf
}
userdb {
  driver = passwd-file
  args = username_format=%u $MAIL_DIR/users
  default_fields = uid=clawpenmail gid=clawpenmail home=$MAIL_DIR/mail/%d/%n
}
service imap-login {
  inet_listener imap {
    port = 143
  }
  inet_listener imaps {
    port = 993
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = 24
  }
}
service auth {
  unix_listener $PF_QUEUE/private/clawpen-auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF

# -- postfix (a second instance: /etc/postfix stays the distribution's) ------------------------
install -d -m 0755 "$PF_CONF"
cp /usr/share/postfix/master.cf.dist "$PF_CONF/master.cf"
cat >"$PF_CONF/main.cf" <<EOF
# written by scripts/ensure-mail.sh
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $PF_DATA
myhostname = mx.clawpen.test
mydomain = clawpen.test
myorigin = clawpen.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = clawpen.test
virtual_transport = lmtp:inet:127.0.0.1:24
default_transport = error:this test server delivers to clawpen.test only
relay_transport = error:this test server delivers to clawpen.test only
message_size_limit = 52428800
maillog_file = $MAIL_DIR/postfix.log
smtpd_tls_cert_file = $MAIL_DIR/tls/cert.pem
smtpd_tls_key_file = $MAIL_DIR/tls/key.pem
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/clawpen-auth
smtpd_sasl_auth_enable = no
biff = no
EOF
postconf -c "$PF_CONF" -F '*/*/chroot = n' # no chroot to furnish: loopback and IPs only
submission_options=(
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o "smtpd_recipient_restrictions=check_recipient_access,texthash:$MAIL_DIR/defer,permit_sasl_authenticated,reject"
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
)
{
  echo "587 inet n - n - - smtpd -o syslog_name=postfix/submission" \
    "-o smtpd_tls_security_level=encrypt -o smtpd_tls_auth_only=yes ${submission_options[*]}"
  echo "465 inet n - n - - smtpd -o syslog_name=postfix/smtps" \
    "-o smtpd_tls_wrappermode=yes ${submission_options[*]}"
} >>"$PF_CONF/master.cf"

# -- start, or reload what runs ---------------------------------------------------------------
postfix -c "$PF_CONF" check # creates the queue's directories, private/ among them
alive() { [[ -s $1 ]] && kill -0 "$(tr -dc 0-9 <"$1")" 2>/dev/null; }
if alive "$MAIL_DIR/run/master.pid"; then
  dovecot -c "$MAIL_DIR/dovecot.conf" reload
else
  dovecot -c "$MAIL_DIR/dovecot.conf"
fi
if postfix -c "$PF_CONF" status >/dev/null 2>&1; then
  postfix -c "$PF_CONF" reload >/dev/null 2>&1
else
  postfix -c "$PF_CONF" start >/dev/null 2>&1
fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
  if listening 143 && listening 993 && listening 24 && listening 25 && listening 587 &&
    listening 465 && [[ -S $PF_QUEUE/private/clawpen-auth ]]; then
    say "ready: IMAP 127.0.0.1:143/993, SMTP 127.0.0.1:25/587/465, users ${USERS[*]/%/@clawpen.test}, CA $MAIL_DIR/tls/cert.pem"
    exit 0
  fi
  sleep 0.1
done
say "the mail servers did not come up in ${WAIT_SECONDS}s; see $MAIL_DIR/dovecot.log and $MAIL_DIR/postfix.log" >&2
exit 1
