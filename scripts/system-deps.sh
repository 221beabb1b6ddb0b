#!/usr/bin/env bash
# Make sure the Debian packages the store needs are installed: with apt-get when we are root,
# otherwise say exactly what to install. Quiet when everything is there.
set -euo pipefail

# command-or-path  package
needs=(
  "python3 python3"
  "/usr/bin/python3 python3"
  "git git"
  "bwrap bubblewrap"
  "setpriv util-linux"
  "rg ripgrep"
  "node nodejs"
  "chromium chromium"
  "redis-server redis-server"
  "socat socat"
  "pg_ctlcluster postgresql"
  "npm npm"
  "/usr/lib/python3/dist-packages/psycopg2 python3-psycopg2"
  "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf fonts-noto-color-emoji"
  # Android apps built from source in the sandbox (examples/targets/field-notes-android) and signed on
  # the host (agents/apksign.py): Debian's aapt, smali, zipalign and platform resources, and the JDK 17
  # whose /etc/java-17-openjdk the sandbox shows (agents/sandbox/bwrap.py).
  "aapt aapt"
  "apksigner apksigner"
  "zipalign zipalign"
  "smali libsmali-java"
  "/usr/share/android-framework-res/framework-res.apk android-framework-res"
  "/usr/lib/jvm/java-17-openjdk-amd64/bin/keytool openjdk-17-jre-headless"
)

missing=()
for pair in "${needs[@]}"; do
  cmd=${pair%% *}
  pkg=${pair##* }
  if [[ $cmd == /* ]]; then [[ -e $cmd ]] && continue; else command -v "$cmd" >/dev/null 2>&1 && continue; fi
  [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done
# The virtualenv module is a separate package on Debian's own Python.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then missing+=("python3-venv"); fi
# The sandbox's seccomp filter is made by libseccomp through its binding for Debian's own Python
# (agents/sandbox/seccomp.py); without it the sandbox refuses to run anything.
if ! /usr/bin/python3 -I -c 'import seccomp' >/dev/null 2>&1; then missing+=("python3-seccomp"); fi

if ((${#missing[@]} == 0)); then exit 0; fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

echo "Prototype Store needs these Debian/Ubuntu packages: ${missing[*]}" >&2
echo "Install them with:  sudo apt-get install -y ${missing[*]}" >&2
echo "(make installs them by itself when run as root.)" >&2
exit 1
