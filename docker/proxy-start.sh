# Start of the `proxy` service: refuse to serve the UI without a password and an address.
# (Run by sh in the Caddy image; mounted by docker-compose.yml.)
set -eu
fail() { echo "proxy: $*" >&2; exit 1; }
[ -n "${PROXY_SITE_ADDRESS:-}" ] ||
  fail "set PROXY_SITE_ADDRESS in .env: this host's DNS name (HTTPS via Let's Encrypt) or https://ITS-IP; see README"
[ -n "${PROXY_PASSWORD_HASH:-}" ] ||
  fail "set PROXY_PASSWORD_HASH in .env to a bcrypt hash, in single quotes: docker run --rm -it caddy:2.10 caddy hash-password"
case "$PROXY_PASSWORD_HASH" in
  '$2a$'* | '$2b$'* | '$2y$'*) ;;
  *) fail "PROXY_PASSWORD_HASH is not a bcrypt hash (\$2a\$…): put the output of caddy hash-password there, not the password, in single quotes" ;;
esac
exec caddy run --config /etc/caddy/Caddyfile --adapter caddyfile
