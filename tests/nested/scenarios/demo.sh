#!/bin/sh
# The demo cell (cells/test-demo.toml): banner and a summary of the cell's
# hardware as the guest sees it; exits through debug-exit with 0.
cell=/cellvm/cells/test-demo.toml
echo "scenario: cellvm run $cell"
cellvm run "$cell" 2>&1
rc=$?
echo "scenario: cellvm rc=$rc"
exit $rc
