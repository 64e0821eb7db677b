#!/bin/sh
# Install the Debian packages named as arguments, when they are missing.
# Runs apt-get as root or through sudo; otherwise says what to run and goes on.
missing=""
for package in "$@"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing && exit 0
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing && exit 0
fi
echo "musicgen: could not install$missing. Please run: sudo apt-get install$missing" >&2
echo "musicgen: the app still works without them, but it cannot play audio." >&2
exit 0
