# Sourced by the scripts that need system packages: `install_needs NAME` installs, with apt, the
# packages of the associative array NAME (command => Debian package) whose command is missing.
install_needs() {
  local -n table=$1
  local missing=() command
  for command in "${!table[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${table[$command]}")
  done
  ((${#missing[@]})) || return 0
  echo "installing: ${missing[*]}"
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  # --no-install-recommends: prometheus' package would otherwise pull and start a server where
  # systemd runs; what is needed here are the commands.
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
