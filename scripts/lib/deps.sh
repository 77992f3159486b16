# Sourced by scripts/test and scripts/quickstart: install the Debian packages
# listed in scripts/packages.txt that are missing. Only apt-get, only as root.
deps_install() {
    local root=$1 missing=() pkg
    while read -r pkg; do
        case "$pkg" in ''|'#'*|'['*) continue ;; esac
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done < "$root/scripts/packages.txt"
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: ${missing[*]} (run as root, or install them)" >&2
        return 1
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
