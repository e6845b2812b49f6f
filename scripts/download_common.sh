#!/usr/bin/env bash
# The download function shared by the download scripts (docs/data.md, "Downloads").
#   source scripts/download_common.sh
#   start_content_checker MODULE...   # before any download: the checks need the project's packages
#   download URL DESTINATION CHECK    # CHECK: lmdb, json, checkpoint or sha256:<hex>

source "$(dirname "${BASH_SOURCE[0]}")/usage.sh"

MIRROR_HINT="set VISDIAL_DATA_URL / VISDIAL_VOCAB_URL / VISDIAL_CKPT_URL to a mirror (see docs/data.md)"
RESPONSE_HEADERS="$(mktemp)"  # the headers of the last response, written by the download tools
CHECKER_PID=""                # the content checker (start_content_checker)

finish() {  # on exit: no temporary file left, and the checker has seen the end of its requests
    rm -f "$RESPONSE_HEADERS"
    if [ -n "$CHECKER_PID" ]; then
        exec 3>&-
        wait "$CHECKER_PID" || true
    fi
}
trap finish EXIT

fail() {  # MESSAGE...: the one error line, exit code 2 like every user-facing error of the project
    echo "error: $*" >&2
    exit 2
}

find_python() {  # MODULE...: sets PYTHON to the first of .venv/bin/python, python, python3 having them
    local candidate
    for candidate in .venv/bin/python python python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import importlib.util, sys
sys.exit(not all(importlib.util.find_spec(name) for name in sys.argv[1:]))' "$@" 2>/dev/null; then
            PYTHON="$candidate"
            return 0
        fi
    done
    fail "no Python with the project's packages ($*) to check the downloads (tried .venv/bin/python," \
         "python, python3): run bash scripts/setup_env.sh or activate the project's environment"
}

# One Python process checks every file of a run (torch imported once): content_problem writes to it
# on descriptor 3 and reads its verdict on descriptor 4.
start_content_checker() {  # MODULE...: the packages the checks of this script need
    find_python "$@"
    local pipes
    pipes="$(mktemp -d)"
    mkfifo "$pipes/requests" "$pipes/verdicts"
    "$PYTHON" -m scripts.check_download < "$pipes/requests" > "$pipes/verdicts" &
    CHECKER_PID=$!
    exec 3> "$pipes/requests" 4< "$pipes/verdicts"
    rm -r "$pipes"  # the open ends keep the pipes alive
}

content_problem() (  # CHECK FILE: prints what is wrong with FILE and fails; silent when it passes
    trap '' PIPE  # (in this subshell only) a checker that died fails the write, not the script
    verdict=""
    { printf '%s\t%s\n' "$1" "$2" >&3 && IFS= read -r verdict <&4; } 2>/dev/null \
        || verdict="its content check stopped unexpectedly"
    [ "$verdict" = ok ] && exit 0
    echo "$verdict"
    exit 1
)

# download_<tool> URL PART: appends to PART (an HTTP Range request), the headers to $RESPONSE_HEADERS,
# prints why it failed. A 416 answer means PART is whole already: success, the size check confirms it.

download_python() {
    "$PYTHON" - "$1" "$2" "$RESPONSE_HEADERS" <<'PYTHON'
import os
import shutil
import sys
import urllib.error
import urllib.request

url, part, headers_file = sys.argv[1:4]


def save_headers(status, headers):
    with open(headers_file, "w") as out:
        out.write(f"HTTP/1.1 {status}\n" + "".join(f"{name}: {value}\n" for name, value in headers.items()))


have = os.path.getsize(part) if os.path.exists(part) else 0
request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
try:
    with urllib.request.urlopen(request, timeout=60) as response:
        save_headers(response.status, response.headers)
        mode = "ab" if have and response.status == 206 else "wb"
        with open(part, mode) as out:
            shutil.copyfileobj(response, out, 1 << 20)
except urllib.error.HTTPError as error:
    save_headers(error.code, error.headers)
    if error.code == 416 and have:
        sys.exit(0)
    print(f"HTTP {error.code} {error.reason}")
    sys.exit(1)
except (urllib.error.URLError, OSError) as error:
    print(f"network error: {getattr(error, 'reason', error)}")
    sys.exit(1)
except KeyboardInterrupt:  # Ctrl-C: no traceback; the rerun resumes the .part
    sys.exit(130)
PYTHON
}

download_curl() {
    local progress=(--silent) status
    [ -t 2 ] && progress=(--progress-bar)
    status="$(curl "${progress[@]}" --fail --location --retry 2 --continue-at - --dump-header "$RESPONSE_HEADERS" \
        --write-out '%{http_code}' --output "$2" "$1")" && return 0
    local code=$?
    case "$code" in
        33) rm -f "$2"; download_curl "$1" "$2"; return ;;  # server ignores ranges: start again
        22) [ "$status" = 416 ] && return 0; echo "HTTP $status" ;;
        18) echo "the transfer ended early" ;;
        *) echo "network error (curl exit code $code)" ;;
    esac
    return 1
}

download_wget() {  # (no progress bar: wget's goes where the response headers are read from)
    local log status
    log="$(wget --quiet --server-response --continue --tries=3 --output-document "$2" "$1" 2>&1)" \
        && { printf '%s\n' "$log" > "$RESPONSE_HEADERS"; return 0; }
    local code=$?
    printf '%s\n' "$log" > "$RESPONSE_HEADERS"
    status="$(printf '%s\n' "$log" | awk '/^ *HTTP\//{code=$2} END{print code}')"
    [ "$status" = 416 ] && return 0
    if [ "$code" = 8 ] && [ -n "$status" ]; then echo "HTTP $status"; else echo "network error (wget exit code $code)"; fi
    return 1
}

announced_size() {  # the file's full size by the last response in $RESPONSE_HEADERS; empty if not said
    tr -d '\r' < "$RESPONSE_HEADERS" | awk '
        /^ *HTTP\// { status = $2; size = ""; total = "" }
        tolower($1) == "content-length:" { size = $2 }
        tolower($1) == "content-range:" { n = split($NF, range, "/"); total = range[n] }
        END {
            if (status == 200) print size
            else if ((status == 206 || status == 416) && total != "*") print total
        }'
}

download() {  # URL DESTINATION CHECK
    local url="$1" destination="$2" check="$3" problem
    if [ -e "$destination" ]; then
        problem="$(content_problem "$check" "$destination")" \
            || fail "$destination (from $url): $problem; delete it and rerun to download it again"
        echo "[download] $destination exists and passes its check, skipped"
        return 0
    fi
    mkdir -p "$(dirname "$destination")"
    local part="$destination.part" tool="${VISDIAL_DOWNLOADER:-}" failure=""
    if [ -z "$tool" ]; then  # curl, else wget, else Python's urllib
        tool=python
        command -v wget >/dev/null 2>&1 && tool=wget
        command -v curl >/dev/null 2>&1 && tool=curl
    fi
    case "$tool" in curl|wget|python) ;; *)
        fail "VISDIAL_DOWNLOADER=$tool is not one of curl, wget, python" ;;
    esac
    echo "[download] $url -> $destination"
    : > "$RESPONSE_HEADERS"
    failure="$("download_$tool" "$url" "$part")" || failure="${failure:-failed}"

    local expected have
    expected="$(announced_size)"
    have=0
    [ -f "$part" ] && have=$(($(wc -c < "$part")))
    if [ -n "$expected" ] && [ "$have" -lt "$expected" ]; then
        fail "$url: the transfer ended early ($have of the $expected bytes the server announced); rerun to resume"
    elif [ -n "$expected" ] && [ "$have" -gt "$expected" ]; then
        rm -f "$part"
        fail "$url: $have bytes, more than the $expected the server announced; rerun to download it again"
    elif [ -n "$failure" ]; then
        [ -s "$part" ] || rm -f "$part"
        fail "$url: $failure; rerun to retry, or $MIRROR_HINT"
    fi

    [ -f "$part" ] || : > "$part"  # an empty body writes no file
    if ! problem="$(content_problem "$check" "$part")"; then
        rm -f "$part"
        fail "$url: $problem; check the URL, or $MIRROR_HINT"
    fi
    mv "$part" "$destination"
}
