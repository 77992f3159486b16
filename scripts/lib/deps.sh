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

# Debian 12's systemd (252) predates Type=notify-reload (253). So that the tests
# can still verify the notify-reload units, unpack systemd-analyze from
# bookworm-backports into .cache/systemd-backports: apt with a private source
# list, lists and cache (signatures checked against the system's keyring);
# nothing is installed and the system's apt configuration is not touched.
deps_systemd_backports() {
    local root=$1 d v
    v=$(systemctl --version 2>/dev/null | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
    [ "${v:-0}" -ge 253 ] && return 0
    d=$root/.cache/systemd-backports
    [ -x "$d/root/usr/bin/systemd-analyze" ] && return 0
    echo "fetching systemd-analyze >= 253 from bookworm-backports into $d"
    rm -rf "$d"
    mkdir -p "$d/lists/partial" "$d/cache" "$d/root"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' >"$d/sources.list"
    local o=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o APT::Sandbox::User=root
        -o Debug::NoLocking=1)
    if ! apt-get "${o[@]}" update -qq >/dev/null 2>&1 ||
        ! (cd "$d" && apt-get "${o[@]}" download -qq systemd/bookworm-backports \
            libsystemd-shared/bookworm-backports >/dev/null 2>&1); then
        echo "could not fetch systemd from bookworm-backports: the notify-reload check will fail" >&2
        return 0
    fi
    for deb in "$d"/*.deb; do dpkg-deb -x "$deb" "$d/root"; done
    rm -f "$d"/*.deb
}
