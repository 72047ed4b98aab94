//! Unit files: `systemd-analyze verify` in a throw-away root, and reading their directives.

use std::path::Path;
use std::process::Command;

/// Runs `systemd-analyze verify` on `unit` as installed: the unit and the units shipped beside
/// it (the `.service` files of its directory, which it may pull in) under
/// `/etc/systemd/system`, each binary at its path, the system's own units beside them, all
/// inside a temporary root so nothing on this machine changes. `Err` holds every complaint
/// (warnings included).
pub fn verify(unit: &Path, binaries: &[(&str, &Path)]) -> Result<(), String> {
    verify_with_dropins(unit, &[], binaries)
}

/// [`verify`] with drop-ins installed for the unit (`<unit>.d/<name>`), as a drop-in amending
/// a packaged unit is.
pub fn verify_with_dropins(
    unit: &Path,
    dropins: &[(&str, &Path)],
    binaries: &[(&str, &Path)],
) -> Result<(), String> {
    let root = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let r = root.path();
    let unit_name = unit
        .file_name()
        .ok_or_else(|| format!("{} has no file name", unit.display()))?;
    let unit_dir = r.join("etc/systemd/system");
    std::fs::create_dir_all(&unit_dir).map_err(|e| e.to_string())?;
    let installed_unit = unit_dir.join(unit_name);
    if let Some(shipped) = unit.parent() {
        for entry in
            std::fs::read_dir(shipped).map_err(|e| format!("{}: {e}", shipped.display()))?
        {
            let path = entry.map_err(|e| e.to_string())?.path();
            if let (Some(name), Some("service")) =
                (path.file_name(), path.extension().and_then(|e| e.to_str()))
            {
                std::fs::copy(&path, unit_dir.join(name))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    std::fs::copy(unit, &installed_unit).map_err(|e| format!("{}: {e}", unit.display()))?;
    if !dropins.is_empty() {
        let mut dir = installed_unit.clone().into_os_string();
        dir.push(".d");
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (name, source) in dropins {
            std::fs::copy(source, dir.join(name))
                .map_err(|e| format!("{}: {e}", source.display()))?;
        }
    }
    // The targets a service is ordered against (sysinit.target, …) come from the system.
    copy_dir(
        Path::new("/usr/lib/systemd/system"),
        &r.join("usr/lib/systemd/system"),
    )?;
    for (installed_path, source) in binaries
        .iter()
        .copied()
        .chain([("/bin/kill", Path::new("/bin/kill"))])
    {
        let target = r.join(installed_path.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::copy(source, &target).map_err(|e| format!("{}: {e}", source.display()))?;
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .arg(&installed_unit)
        .output()
        .map_err(|e| format!("cannot run systemd-analyze: {e}"))?;
    let complaints = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() && complaints.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("exit {:?}: {complaints}", output.status.code()))
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cp -a {} {} failed", from.display(), to.display()))
    }
}

/// Every `Key=value` of `section` in a unit file, in order (repeated keys kept).
pub fn directives(unit_text: &str, section: &str) -> Vec<(String, String)> {
    let header = format!("[{section}]");
    let mut inside = false;
    let mut found = Vec::new();
    for line in unit_text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside && !line.starts_with('#') && !line.starts_with(';') {
            if let Some((key, value)) = line.split_once('=') {
                found.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }
    found
}

/// What every daemon unit of this project must say: `Type=notify`, reload by SIGHUP, restart on
/// failure, the config file under `/etc`, exactly the `capabilities` given, and the hardening
/// baseline of docs/ARCHITECTURE.md. Returns the `[Service]` directives for further checks.
pub fn assert_daemon_unit(
    unit_text: &str,
    config_file: &str,
    capabilities: &str,
) -> Vec<(String, String)> {
    let service = directives(unit_text, "Service");
    let get = |key: &str| -> Vec<&str> {
        service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    assert!(
        get("ExecReload").iter().any(|v| v.contains("-HUP")),
        "no ExecReload with SIGHUP"
    );
    assert!(
        get("ExecStart").iter().any(|v| v.contains(config_file)),
        "ExecStart does not read {config_file}"
    );
    assert_eq!(get("CapabilityBoundingSet"), [capabilities]);
    assert_eq!(get("AmbientCapabilities"), [capabilities]);
    for (key, expected) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(get(key), [expected], "{key}");
    }
    assert!(
        !get("RestrictAddressFamilies").is_empty(),
        "address families not restricted"
    );
    assert!(
        get("SystemCallFilter").contains(&"@system-service"),
        "no system-call filter"
    );
    assert!(
        !get("TimeoutStopSec").is_empty(),
        "no TimeoutStopSec for the drain to fit in"
    );
    // `infinity` or the kernel's maximum would let a descriptor leak take the container down.
    let nofile = get("LimitNOFILE");
    assert!(
        matches!(nofile.as_slice(), [n] if n.parse::<u32>().is_ok_and(|n| (1024..=65536).contains(&n))),
        "LimitNOFILE must be one finite value in 1024..=65536, is {nofile:?}"
    );
    service
}
