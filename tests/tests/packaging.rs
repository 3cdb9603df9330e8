//! The packages as an operator meets them (issue #7): `packaging/build.sh` builds the
//! `.deb` and the `.rpm` from one release build; the `.deb` is installed on this
//! machine with dpkg, looked at, upgraded over an edited config, removed and purged;
//! the `.rpm` is inspected with rpm's queries for the same files and the config
//! marking.
//!
//! Installing needs root; a `directord` package already on the machine fails the
//! test rather than being replaced. The build needs cargo-deb, cargo-generate-rpm
//! and rpm (see tests/run.sh).

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Files both packages hold, with their modes.
const COMMON: &[(&str, u32)] = &[
    ("/usr/sbin/directord", 0o755),
    ("/usr/bin/directorctl", 0o755),
    ("/etc/directord.toml", 0o644),
    ("/usr/share/man/man8/directord.8.gz", 0o644),
    ("/usr/share/man/man8/directorctl.8.gz", 0o644),
    ("/usr/share/man/man5/directord.toml.5.gz", 0o644),
    ("/usr/share/bash-completion/completions/directorctl", 0o644),
    (
        "/usr/share/fish/vendor_completions.d/directorctl.fish",
        0o644,
    ),
    ("/usr/share/doc/directord/README.md", 0o644),
];
/// Where Debian and the RPM distributions keep units and zsh completions.
const DEB_ONLY: &[(&str, u32)] = &[
    ("/lib/systemd/system/directord.service", 0o644),
    ("/usr/share/zsh/vendor-completions/_directorctl", 0o644),
];
const RPM_ONLY: &[(&str, u32)] = &[
    ("/usr/lib/systemd/system/directord.service", 0o644),
    ("/usr/share/zsh/site-functions/_directorctl", 0o644),
];

struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// Runs `packaging/build.sh` once for all tests of this binary.
fn packages() -> &'static Packages {
    static BUILT: OnceLock<Result<Packages, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let root = workspace();
        let out = Command::new("bash")
            .arg(root.join("packaging/build.sh"))
            .current_dir(&root)
            .output()
            .map_err(|e| format!("cannot run bash packaging/build.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "packaging/build.sh failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let version = env!("CARGO_PKG_VERSION");
        let dir = root.join("target/packages");
        let packages = Packages {
            deb: dir.join(format!("directord_{version}-1_amd64.deb")),
            rpm: dir.join(format!("directord-{version}-1.x86_64.rpm")),
        };
        for p in [&packages.deb, &packages.rpm] {
            if !p.is_file() {
                return Err(format!("packaging/build.sh made no {}", p.display()));
            }
        }
        Ok(packages)
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Runs a program to completion; a missing program names its package.
fn run(program: &str, args: &[&str], apt: &str) -> Output {
    match Command::new(program).args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} is missing: apt-get install {apt}")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

/// Runs a program that must succeed; returns its stdout.
fn ok(program: &str, args: &[&str], apt: &str) -> String {
    let o = run(program, args, apt);
    assert!(
        o.status.success(),
        "{program} {} failed ({}): {}{}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The examples every package carries in /usr/share/doc/directord/examples.
fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace().join("etc/examples"))
        .expect("etc/examples")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "etc/examples has no .toml file");
    names
}

fn expected(only: &[(&str, u32)]) -> Vec<(String, u32)> {
    let mut files: Vec<(String, u32)> = COMMON
        .iter()
        .chain(only)
        .map(|(p, m)| (p.to_string(), *m))
        .collect();
    for name in examples() {
        files.push((format!("/usr/share/doc/directord/examples/{name}"), 0o644));
    }
    files
}

/// `-rwxr-xr-x` -> 0o755.
fn mode_of(perms: &str) -> Option<u32> {
    let bits = perms.get(1..10)?;
    Some(
        bits.chars()
            .enumerate()
            .filter(|(_, c)| *c != '-')
            .fold(0, |m, (i, _)| m | (1 << (8 - i))),
    )
}

/// Asserts that a listing of (mode, path) holds every expected file with its mode.
fn assert_listing(what: &str, listing: &[(Option<u32>, String)], want: &[(String, u32)]) {
    for (path, mode) in want {
        let found = listing.iter().find(|(_, p)| p == path);
        match found {
            None => panic!("{what} lacks {path}; it holds:\n{listing:#?}"),
            Some((m, _)) => assert_eq!(
                *m,
                Some(*mode),
                "{what}: {path} has mode {}, expected {mode:o}",
                m.map_or("?".into(), |m| format!("{m:o}"))
            ),
        }
    }
}

/// `dpkg-deb -c` and `-I`: the file list with modes, the control fields and the
/// conffile. No root needed.
#[test]
fn deb_holds_the_files_and_marks_the_conffile() {
    let deb = packages().deb.to_string_lossy().into_owned();
    let listing: Vec<(Option<u32>, String)> = ok("dpkg-deb", &["-c", &deb], "dpkg")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.last()?.strip_prefix('.')?;
            Some((mode_of(f.first()?), path.trim_end_matches('/').to_string()))
        })
        .collect();
    assert_listing("the .deb", &listing, &expected(DEB_ONLY));
    assert!(
        !listing
            .iter()
            .any(|(_, p)| p == "/usr/share/zsh/site-functions/_directorctl"),
        "the .deb should use Debian's zsh vendor-completions"
    );

    let info = ok("dpkg-deb", &["-I", &deb], "dpkg");
    for field in ["Package: directord", "Section: net", "Depends: adduser"] {
        assert!(info.contains(field), "dpkg-deb -I lacks {field:?}:\n{info}");
    }
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.contains(script), "no {script} in the .deb:\n{info}");
    }
    let conffiles = ok("dpkg-deb", &["-I", &deb, "conffiles"], "dpkg");
    assert_eq!(conffiles.trim(), "/etc/directord.toml");
    let postinst = ok("dpkg-deb", &["-I", &deb, "postinst"], "dpkg");
    assert!(
        postinst.contains("addgroup --system"),
        "postinst creates no system group:\n{postinst}"
    );
}

/// `rpm -qip`, `-qlp`, `--configfiles`: the same files (units and zsh completions
/// where RPM distributions keep them) and `%config(noreplace)`. No root needed.
#[test]
fn rpm_holds_the_files_and_marks_the_config_noreplace() {
    let rpm = packages().rpm.to_string_lossy().into_owned();
    let info = ok("rpm", &["-qip", &rpm], "rpm");
    for field in ["directord", "GPL-2.0-or-later", "x86_64"] {
        assert!(info.contains(field), "rpm -qip lacks {field:?}:\n{info}");
    }
    let plain: Vec<String> = ok("rpm", &["-qlp", &rpm], "rpm")
        .lines()
        .map(str::to_string)
        .collect();
    let listing: Vec<(Option<u32>, String)> = ok(
        "rpm",
        &["-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\\n]", &rpm],
        "rpm",
    )
    .lines()
    .filter_map(|l| {
        let (perms, path) = l.split_once(' ')?;
        Some((mode_of(perms), path.to_string()))
    })
    .collect();
    let want = expected(RPM_ONLY);
    assert_listing("the .rpm", &listing, &want);
    for (path, _) in &want {
        assert!(plain.contains(path), "rpm -qlp lacks {path}: {plain:?}");
    }

    let config = ok("rpm", &["-qp", "--configfiles", &rpm], "rpm");
    assert_eq!(config.trim(), "/etc/directord.toml");
    let flags = ok(
        "rpm",
        &["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\\n]", &rpm],
        "rpm",
    );
    let line = flags
        .lines()
        .find(|l| l.starts_with("/etc/directord.toml "))
        .unwrap_or_default();
    assert!(
        line.ends_with(" cn"),
        "/etc/directord.toml is not %config(noreplace): {line:?}"
    );
    let scripts = ok("rpm", &["-qp", "--scripts", &rpm], "rpm");
    assert!(
        scripts.contains("preinstall") && scripts.contains("groupadd -r directord"),
        "no %pre creating the group:\n{scripts}"
    );
}

/// Purges the package when the test ends, also when an assertion failed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "directord"]).output();
    }
}

fn dpkg_status() -> String {
    let o = run(
        "dpkg-query",
        &["-W", "-f", "${db:Status-Status}", "directord"],
        "dpkg",
    );
    if o.status.success() {
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    } else {
        "not-installed".into()
    }
}

fn gid_of(group: &str) -> Option<u32> {
    let o = run("getent", &["group", group], "libc-bin");
    let line = String::from_utf8_lossy(&o.stdout).into_owned();
    line.split(':').nth(2)?.trim().parse().ok()
}

/// `dpkg -i` on this machine: the files at their paths with their modes, the group,
/// the state directory, `--check-config` from the installed path, the man pages and
/// completions; a re-install keeps an edited config; `dpkg -r` keeps the config,
/// `dpkg --purge` removes it.
#[test]
fn deb_installs_upgrades_and_purges_cleanly() {
    let test = "deb_installs_upgrades_and_purges_cleanly";
    if !nix::unistd::geteuid().is_root() {
        let _ = writeln!(std::io::stderr(), "{test}: skipped: needs root (dpkg -i)");
        return;
    }
    let before = dpkg_status();
    assert!(
        before == "not-installed",
        "a directord package is already on this machine (dpkg status: {before}); \
         this test installs and purges its own and will not replace it. Remove it \
         first: dpkg --purge directord"
    );
    let deb = packages().deb.to_string_lossy().into_owned();
    ok("dpkg", &["-i", &deb], "dpkg");
    let _purge = Installed;
    assert_eq!(dpkg_status(), "installed");

    for (path, mode) in expected(DEB_ONLY) {
        let m = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(m.is_file(), "{path} is not a file");
        assert_eq!(
            m.permissions().mode() & 0o7777,
            mode,
            "{path} has mode {:o}",
            m.permissions().mode() & 0o7777
        );
        assert_eq!(m.uid(), 0, "{path} is not owned by root");
    }
    let gid = gid_of("directord").expect("the directord group was not created");
    let state = std::fs::metadata("/var/lib/directord").expect("/var/lib/directord");
    assert!(state.is_dir());
    assert_eq!(state.permissions().mode() & 0o7777, 0o750);
    assert_eq!(
        (state.uid(), state.gid()),
        (0, gid),
        "/var/lib/directord owner"
    );

    let check = run(
        "/usr/sbin/directord",
        &["--check-config", "/etc/directord.toml"],
        "directord",
    );
    assert!(
        check.status.success(),
        "installed directord rejects the installed config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("valid"));
    for (page, title) in [
        ("/usr/share/man/man8/directord.8.gz", ".TH DIRECTORD 8"),
        ("/usr/share/man/man8/directorctl.8.gz", ".TH DIRECTORCTL 8"),
        (
            "/usr/share/man/man5/directord.toml.5.gz",
            ".TH DIRECTORD.TOML 5",
        ),
    ] {
        let text = ok("gzip", &["-dc", page], "gzip");
        assert!(text.starts_with(title), "{page} is not a man page");
    }
    let bash = ok(
        "/usr/bin/directorctl",
        &["completions", "bash"],
        "directord",
    );
    assert!(
        bash.contains("directorctl") && bash.contains("takeover"),
        "directorctl completions bash printed no completion script"
    );
    let installed = std::fs::read_to_string("/usr/share/bash-completion/completions/directorctl")
        .expect("bash completion");
    assert_eq!(installed, bash, "the packaged bash completion is stale");

    // An operator edits the config; installing the package again keeps the edit.
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open("/etc/directord.toml")
        .expect("open /etc/directord.toml");
    writeln!(conf, "# edited by the operator").expect("edit /etc/directord.toml");
    drop(conf);
    ok("dpkg", &["-i", &deb], "dpkg");
    let text = std::fs::read_to_string("/etc/directord.toml").expect("/etc/directord.toml");
    assert!(
        text.contains("# edited by the operator"),
        "re-installing the package overwrote the edited /etc/directord.toml"
    );

    // Remove: the programs go, the config stays (dpkg status config-files).
    ok("dpkg", &["-r", "directord"], "dpkg");
    assert_eq!(dpkg_status(), "config-files");
    for gone in ["/usr/sbin/directord", "/usr/bin/directorctl"] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is still there after dpkg -r"
        );
    }
    assert!(
        Path::new("/etc/directord.toml").exists(),
        "dpkg -r removed the conffile"
    );
    // Purge: the config and the state directory go too; the group stays (Debian
    // leaves system groups, files elsewhere may belong to it).
    ok("dpkg", &["--purge", "directord"], "dpkg");
    assert_eq!(dpkg_status(), "not-installed");
    for gone in [
        "/etc/directord.toml",
        "/var/lib/directord",
        "/lib/systemd/system/directord.service",
        "/usr/share/man/man8/directord.8.gz",
    ] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is still there after dpkg --purge"
        );
    }
}
