# Sourced by the scripts that drive real peers and tools (interop, check-deploy).
# need WHO COMMAND DEBIAN-PACKAGE [APT-GET-OPTION...]: returns when COMMAND is on the
# PATH; else, as root (CI on Debian), installs the package with apt-get (the package
# lists updated once per script); else, or if that did not bring COMMAND, says what
# is missing and exits 2.
need() {
  local who=$1 command=$2 package=$3
  shift 3
  command -v "$command" >/dev/null && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "$who: installing $package for $command"
    if [ -z "${need_updated:-}" ]; then
      apt-get update -qq >/dev/null && need_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" "$package" >/dev/null
  fi
  command -v "$command" >/dev/null || {
    echo "$who: $command is needed (apt-get install $package)" >&2
    exit 2
  }
}
