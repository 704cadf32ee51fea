#!/bin/sh
# Console input: cellvm's stdin reaches the guest's ttyS0. The guest
# (cells/test-echo.toml, report mode) prints CELLVM-ECHO-WAIT and reads one
# line; this script sends it as soon as the prompt appears (no fixed sleep)
# and the guest answers CELLVM-ECHO:<line>.
# cellvm-timeout: 60
# cellvm-cost: 10
cell=/cellvm/cells/test-echo.toml
msg="hello-from-l1-$$"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/in"
# Opening a fifo read-write never blocks; fd 3 is the sending end and keeps
# cellvm's stdin open until this script ends.
exec 3<>"$dir/in"
echo "scenario: cellvm run $cell (sends '$msg' after CELLVM-ECHO-WAIT)"
{
    cellvm run "$cell" <"$dir/in" 3>&- 2>&1
    echo $? >"$dir/rc"
} | {
    sent=0
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s\n' "$line"
        case "$line" in
            *CELLVM-ECHO-WAIT*)
                if [ "$sent" -eq 0 ]; then
                    printf '%s\n' "$msg" >&3
                    sent=1
                    echo "scenario: sent '$msg'"
                fi
                ;;
        esac
    done
    [ "$sent" -eq 1 ] || echo "scenario: never saw CELLVM-ECHO-WAIT, nothing sent"
}
exec 3>&-
rc="$(cat "$dir/rc" 2>/dev/null || echo 1)"
echo "scenario: cellvm rc=$rc"
exit "$rc"
