#!/usr/bin/env bash
# The py4DSTEM environment the comparisons and the round-trip tests use (py4DSTEM 0.14 needs numpy < 2, so it
# never shares this package's environment):
#     bash scripts/py4dstem_venv.sh [DIR]        # default .py4dstem-venv; kept if it already holds py4DSTEM
set -euo pipefail
venv="${1:-.py4dstem-venv}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import py4DSTEM" 2>/dev/null; then
    echo "$venv: py4DSTEM $("$venv/bin/python" -c 'import py4DSTEM; print(py4DSTEM.__version__)') already there"
    exit 0
fi
python3.11 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "py4DSTEM==0.14.18" "numpy<2"
echo "$venv: py4DSTEM $("$venv/bin/python" -c 'import py4DSTEM; print(py4DSTEM.__version__)')"
