#!/bin/sh
# The guest leaves through the debug-exit device with cellvm.exit=42
# (cells/test-exit42.toml): cellvm must exit with status 42.
# cellvm-cost: 9
cell=/cellvm/cells/test-exit42.toml
echo "scenario: cellvm run $cell"
cellvm run "$cell" 2>&1
rc=$?
if [ "$rc" -eq 42 ]; then
    echo "scenario: cellvm rc=$rc (expected 42: ok)"
else
    echo "scenario: cellvm rc=$rc (expected 42: MISMATCH)"
fi
exit $rc
