#!/bin/bash
# lab-manager-setup: run on the manager VM by lab-manager-setup.service (rendered by
# lab-bootstrap into the manager's cloud-init). Installs the tools of [manager.tools], each
# checked against its SHA-256 before it is installed; places the talosconfig in the user's home;
# waits for the cluster and fetches the kubeconfig; bootstraps Flux once when [gitops] is set.
# Every step is skipped when already done, so the unit can simply be run again.
#
# Usage: lab-manager-setup [SETUP_ENV]   (default /etc/lab-manager/setup.env)
set -euo pipefail
# Everything this script creates holds or sits next to credentials: private from the start.
umask 077

conf=${1:-/etc/lab-manager/setup.env}
# shellcheck source=/dev/null
. "$conf"

log() { printf 'lab-manager-setup: %s\n' "$*" >&2; }
fail() {
  log "$*"
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$LAB_STATE_DIR"
group=$(id -gn "$LAB_USER")
export PATH="$LAB_BIN_DIR:$PATH"

# curl refuses any other protocol than LAB_CURL_PROTO (https), redirects included.
fetch() {
  curl --fail --silent --show-error --location \
    --proto "$LAB_CURL_PROTO" --proto-redir "$LAB_CURL_PROTO" \
    --retry "$LAB_DOWNLOAD_TRIES" --retry-delay 5 --retry-all-errors \
    --connect-timeout 20 --max-time 900 --output "$2" "$1"
}

# The SHA-256 for file $2 in checksum file $1: its line (`HASH  NAME`, `HASH *NAME`), or the
# file's only hash when it holds just one (kubectl's `.sha256`).
published_sha256() {
  awk -v want="$2" '
    NF == 1 && NR == 1 { only = $1 }
    NF >= 2 { name = $2; sub(/^\*/, "", name); sub(/^.*\//, "", name); if (name == want) found = $1 }
    END { if (found != "") print found; else if (NR == 1 && only != "") print only }
  ' "$1"
}

# install_tool NAME VERSION URL MEMBER CHECKSUM: MEMBER is the binary's path in the .tar.gz
# (`-`: the download is the binary); CHECKSUM is `sha256:HEX` (pinned) or the checksum file's URL.
install_tool() {
  local name=$1 version=$2 url=$3 member=$4 checksum=$5
  local marker="$LAB_STATE_DIR/tool-$name" want="$version $url $checksum"
  if [ -x "$LAB_BIN_DIR/$name" ] && [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
    log "$name $version: already installed"
    return 0
  fi
  local dir="$work/$name"
  mkdir -p "$dir"
  local file="$dir/${url##*/}"
  log "$name $version: downloading $url"
  fetch "$url" "$file" || fail "$name $version: cannot download $url"
  local expected
  case $checksum in
    sha256:*) expected=${checksum#sha256:} ;;
    *)
      fetch "$checksum" "$dir/checksums" || fail "$name $version: cannot download its checksum file $checksum"
      expected=$(published_sha256 "$dir/checksums" "${url##*/}")
      [ -n "$expected" ] || fail "$name $version: $checksum has no SHA-256 for ${url##*/}"
      ;;
  esac
  local actual
  actual=$(sha256sum "$file" | cut -d' ' -f1)
  if [ "$actual" != "${expected,,}" ]; then
    fail "$name $version: SHA-256 mismatch for $url: expected $expected, got $actual; not installed"
  fi
  local binary=$file
  if [ "$member" != - ]; then
    tar -xzf "$file" -C "$dir" "$member" || fail "$name $version: $url holds no $member"
    binary="$dir/$member"
  fi
  install -m 0755 "$binary" "$LAB_BIN_DIR/.$name.new"
  mv -f "$LAB_BIN_DIR/.$name.new" "$LAB_BIN_DIR/$name"
  printf '%s\n' "$want" >"$marker"
  log "$name $version: installed (sha256 $actual)"
}

# private_copy SRC DEST: DEST 0600 and its directory 0700, both the user's; replaced whole.
private_copy() {
  local dir
  dir=$(dirname "$2")
  install -d -m 0700 -o "$LAB_USER" -g "$group" "$dir"
  install -m 0600 -o "$LAB_USER" -g "$group" "$1" "$dir/.$(basename "$2").new"
  mv -f "$dir/.$(basename "$2").new" "$2"
}

# The first control plane that hands out the admin kubeconfig, trying each in turn: Talos
# serves it once etcd is bootstrapped, which may be long after this VM booted.
fetch_kubeconfig() {
  local dest="$LAB_HOME/.kube/config"
  if [ -s "$dest" ]; then
    log "kubeconfig: already in $dest"
    return 0
  fi
  read -r -a nodes <<<"$LAB_CONTROL_PLANES"
  local try node
  for ((try = 1; try <= LAB_CLUSTER_TRIES; try++)); do
    node=${nodes[$(((try - 1) % ${#nodes[@]}))]}
    if talosctl --talosconfig "$LAB_HOME/.talos/config" --nodes "$node" \
      kubeconfig --force --merge=false "$work/kubeconfig" 2>"$work/talosctl.err"; then
      private_copy "$work/kubeconfig" "$dest"
      log "kubeconfig: fetched from $node into $dest"
      return 0
    fi
    log "kubeconfig: $node does not answer yet (try $try of $LAB_CLUSTER_TRIES): $(tail -n 1 "$work/talosctl.err")"
    sleep "$LAB_CLUSTER_DELAY"
  done
  fail "kubeconfig: no control plane answered after $LAB_CLUSTER_TRIES tries; run systemctl restart lab-manager-setup once the cluster is up"
}

wait_for_api() {
  local try
  for ((try = 1; try <= LAB_CLUSTER_TRIES; try++)); do
    if kubectl --kubeconfig "$LAB_HOME/.kube/config" get nodes >/dev/null 2>"$work/kubectl.err"; then
      return 0
    fi
    log "kubernetes: the API does not answer yet (try $try of $LAB_CLUSTER_TRIES): $(tail -n 1 "$work/kubectl.err")"
    sleep "$LAB_CLUSTER_DELAY"
  done
  fail "kubernetes: the API did not answer after $LAB_CLUSTER_TRIES tries"
}

# Once per repository, branch and path: flux bootstrap is idempotent itself, the marker only
# spares a run at every boot. The token reaches flux in GIT_PASSWORD, never on a command line.
bootstrap_flux() {
  [ -n "${LAB_GITOPS_URL:-}" ] || return 0
  local marker="$LAB_STATE_DIR/flux-bootstrapped"
  local want="$LAB_GITOPS_URL $LAB_GITOPS_BRANCH $LAB_GITOPS_PATH"
  if [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
    log "flux: already bootstrapped from $want"
    return 0
  fi
  wait_for_api
  log "flux: bootstrapping from $LAB_GITOPS_URL ($LAB_GITOPS_BRANCH, $LAB_GITOPS_PATH)"
  GIT_PASSWORD=$(cat "$LAB_GITOPS_TOKEN_FILE") flux bootstrap git \
    --kubeconfig "$LAB_HOME/.kube/config" --url "$LAB_GITOPS_URL" \
    --branch "$LAB_GITOPS_BRANCH" --path "$LAB_GITOPS_PATH" \
    --username "$LAB_GITOPS_USERNAME" --token-auth --silent ||
    fail "flux: bootstrap from $LAB_GITOPS_URL failed"
  printf '%s\n' "$want" >"$marker"
  log "flux: bootstrapped"
}

while read -r name version url member checksum; do
  case $name in '' | '#'*) continue ;; esac
  install_tool "$name" "$version" "$url" "$member" "$checksum"
done <"$LAB_TOOLS_FILE"

private_copy "$LAB_TALOSCONFIG" "$LAB_HOME/.talos/config"
log "talosconfig: in $LAB_HOME/.talos/config"
fetch_kubeconfig
bootstrap_flux
log "done: talosctl and kubectl work for $LAB_USER"
