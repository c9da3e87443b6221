#!/usr/bin/env bash
# Debian packages the tests use as independent third-party software: dcm2niix (DICOM -> NIfTI
# geometry), dicom3tools (dciodvfy validates every SEG we write), dcmtk (storescu/storescp play the
# scanner and PACS), chromium (opens the HTML reports), openssl (makes the TLS test certificates).
# Installs only what is missing; needs root.
set -euo pipefail
pkgs=(dcm2niix dicom3tools dcmtk chromium cmake ninja-build openssl)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then echo "setup-debian: need root to install: ${missing[*]}" >&2; exit 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
