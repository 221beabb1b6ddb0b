#!/bin/sh
# Build dist/field-notes.apk: unsigned, zipaligned. The store signs it outside the sandbox, with a key
# the build never sees. Needs Debian's smali, aapt, zipalign and android-framework-res (no Android SDK).
set -eu
FRAMEWORK=/usr/share/android-framework-res/framework-res.apk

rm -rf build dist
mkdir -p build/assets dist
# The web app goes in as assets/www: MainActivity loads file:///android_asset/www/index.html.
cp -R www build/assets/www
smali assemble --api 21 -o build/classes.dex smali
aapt package -f -M AndroidManifest.xml -S res -A build/assets -I "$FRAMEWORK" -F build/unsigned.apk
(cd build && aapt add unsigned.apk classes.dex >/dev/null)
zipalign -f -p 4 build/unsigned.apk dist/field-notes.apk
echo "built dist/field-notes.apk ($(wc -c < dist/field-notes.apk) bytes, unsigned)"
