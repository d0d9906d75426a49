# Sourced by lab.sh and test.sh: make (or reuse) .venv, activate it, and install falkit
# editable with the extras given as $1 (e.g. "dev,torch"). torch goes first, pinned: an open
# range with no torch installed would pull a multi-GB CUDA build.
install_falkit() {
  local py=${PYTHON:-python3}
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  . .venv/bin/activate
  python -m pip install -q --upgrade pip
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[$1]"
}
