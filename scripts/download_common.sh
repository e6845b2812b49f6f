#!/usr/bin/env bash
# The download function shared by scripts/download_preprocessed.sh and download_checkpoints.sh.
#
#   source scripts/download_common.sh
#   download URL DESTINATION [SHA256]
#
# A file that already exists is skipped. Otherwise it is fetched into DESTINATION.part, which a
# rerun resumes, and renamed to DESTINATION once complete (and, given SHA256, verified). A dead
# link or a network error stops the script with one line naming the URL and what to do.
# The tool is curl, else wget, else Python's urllib; VISDIAL_DOWNLOADER=curl|wget|python forces one.

download_tool() {
    if [ -n "${VISDIAL_DOWNLOADER:-}" ]; then
        echo "$VISDIAL_DOWNLOADER"
    elif command -v curl >/dev/null 2>&1; then
        echo curl
    elif command -v wget >/dev/null 2>&1; then
        echo wget
    else
        echo python
    fi
}

download_python() {  # URL PART: resume PART with an HTTP Range request; prints the failure reason
    local python
    python="$(command -v python3 || command -v python)" || { echo "no curl, wget or python found"; return 1; }
    "$python" - "$1" "$2" <<'PYTHON'
import os
import shutil
import sys
import urllib.error
import urllib.request

url, part = sys.argv[1], sys.argv[2]
have = os.path.getsize(part) if os.path.exists(part) else 0
request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
try:
    with urllib.request.urlopen(request, timeout=60) as response:
        mode = "ab" if have and response.status == 206 else "wb"
        with open(part, mode) as out:
            shutil.copyfileobj(response, out, 1 << 20)
except urllib.error.HTTPError as error:
    if error.code == 416 and have:  # the part file already holds the whole file
        sys.exit(0)
    print(f"HTTP {error.code} {error.reason}")
    sys.exit(1)
except (urllib.error.URLError, OSError) as error:
    print(f"network error: {getattr(error, 'reason', error)}")
    sys.exit(1)
PYTHON
}

download_curl() {  # URL PART
    local progress=(--silent) status
    [ -t 2 ] && progress=(--progress-bar)
    status="$(curl "${progress[@]}" --fail --location --retry 2 --continue-at - \
        --write-out '%{http_code}' --output "$2" "$1")" && return 0
    local code=$?
    case "$code" in
        33) rm -f "$2"; download_curl "$1" "$2"; return ;;  # server ignores ranges: start again
        22) [ "$status" = 416 ] && return 0; echo "HTTP $status" ;;  # 416: the part is complete
        *) echo "network error (curl exit code $code)" ;;
    esac
    return 1
}

download_wget() {  # URL PART (no progress bar: wget's goes where the HTTP status is read from)
    local log status
    log="$(wget --quiet --server-response --continue --tries=3 --output-document "$2" "$1" 2>&1)" \
        && return 0
    local code=$?
    status="$(printf '%s\n' "$log" | awk '/^ *HTTP\//{code=$2} END{print code}')"
    [ "$status" = 416 ] && return 0
    if [ "$code" = 8 ] && [ -n "$status" ]; then echo "HTTP $status"; else echo "network error (wget exit code $code)"; fi
    return 1
}

download() {  # URL DESTINATION [SHA256]
    local url="$1" destination="$2" sha256="${3:-}"
    if [ -f "$destination" ]; then
        echo "[download] $destination exists, skipped"
        return 0
    fi
    mkdir -p "$(dirname "$destination")"
    local part="$destination.part" tool reason
    tool="$(download_tool)"
    case "$tool" in curl|wget|python) ;; *)
        echo "error: VISDIAL_DOWNLOADER=$tool is not one of curl, wget, python" >&2; exit 1 ;;
    esac
    echo "[download] $url -> $destination"
    if ! reason="$("download_$tool" "$url" "$part")"; then
        echo "error: could not download $url (${reason:-failed}); rerun to resume, or set" \
             "VISDIAL_DATA_URL / VISDIAL_CKPT_URL to a mirror (see README)" >&2
        exit 1
    fi
    if [ -n "$sha256" ] && ! echo "$sha256  $part" | sha256sum --check --status; then
        rm -f "$part"
        echo "error: $url: downloaded file does not match its sha256 $sha256; rerun, or use another mirror" >&2
        exit 1
    fi
    mv "$part" "$destination"
}
