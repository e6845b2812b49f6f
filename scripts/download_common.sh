#!/usr/bin/env bash
# The download function shared by scripts/download_preprocessed.sh and download_checkpoints.sh.
#
#   source scripts/download_common.sh
#   start_content_checker MODULE...   # before any download: the checks need the project's packages
#   download URL DESTINATION CHECK    # CHECK: lmdb, json, checkpoint or sha256:<hex>
#
# A file is fetched into DESTINATION.part, which a rerun resumes, and renamed to DESTINATION only
# once it has passed every check:
#   * its size is the one the server announced (Content-Length, or the total of Content-Range
#     when resuming): a transfer that ended early fails, whatever the tool thinks of it;
#   * it is not a web page (an error or login page served with status 200), and its content is
#     what CHECK says (scripts/check_download.py).
# Every failure is one `error: ...` line naming the URL, and exit code 2. A .part cut short by the
# network is kept for the rerun to resume; a .part that failed a check is deleted, so the rerun
# fetches it afresh instead of resuming garbage.
# A file already at DESTINATION is not fetched again but gets the content check (no network): a
# broken file, say from an older version of these scripts, is reported, never deleted.
# The tool is curl, else wget, else Python's urllib; VISDIAL_DOWNLOADER=curl|wget|python forces one.

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

# One Python process checks every file of a run, so that torch is imported once, not once a
# checkpoint (seconds each): content_problem writes to it through one pipe and reads its verdict
# from another (descriptors 3 and 4).
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

# download_<tool> URL PART: appends to PART (resuming it with an HTTP Range request), writes the
# response headers to $RESPONSE_HEADERS, prints why it failed when it did. A 416 answer to the
# Range request means the part already holds the whole file: success, the size check confirms it.

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

file_size() {  # FILE: its size in bytes, 0 when it does not exist
    if [ -f "$1" ]; then echo $(($(wc -c < "$1"))); else echo 0; fi
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
    local part="$destination.part" tool failure=""
    tool="$(download_tool)"
    case "$tool" in curl|wget|python) ;; *)
        fail "VISDIAL_DOWNLOADER=$tool is not one of curl, wget, python" ;;
    esac
    echo "[download] $url -> $destination"
    : > "$RESPONSE_HEADERS"
    failure="$("download_$tool" "$url" "$part")" || failure="${failure:-failed}"

    local expected have
    expected="$(announced_size)"
    have="$(file_size "$part")"
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
