//! Processes the plugin starts (helm, a credential plugin): a stand-in that
//! hangs, and whether its whole process group is gone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Rig;

/// The processes of group `pgid` still alive (zombies are dead).
pub fn group_members(pgid: u32) -> Vec<String> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().map_while(Result::ok) {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((name, rest)) = stat.rsplit_once(") ") else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && fields[0] != "Z" {
            found.push(format!(
                "{} {}",
                entry.file_name().to_string_lossy(),
                name.split_once('(').map(|x| x.1).unwrap_or(name)
            ));
        }
    }
    found
}

/// A HELM_BIN that is the rig's helm, except that an upgrade starts a
/// `sleep 600` in the background and then hangs; it writes its pid (= its
/// process group) to `hung` when it does.
pub fn hanging_helm(rig: &Rig, dir: &Path) -> (PathBuf, PathBuf) {
    let helm = format!("{}/helm", rig.get("PATH").split(':').next().unwrap());
    let hung = dir.join("hung");
    let script = dir.join("helm");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \" $* \" in\n  *\" upgrade \"*) sleep 600 & echo $$ > {hung}.tmp; mv {hung}.tmp {hung}; exec sleep 600 ;;\nesac\nexec {helm} \"$@\"\n",
            hung = hung.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, hung)
}

/// Helm's process group is gone: SIGKILL reached it at once, and what remains
/// within five seconds are at most zombies on their way out.
pub fn assert_group_gone(pgid: u32) {
    let until = Instant::now() + Duration::from_secs(5);
    while !group_members(pgid).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(group_members(pgid), Vec::<String>::new(), "helm's process group {pgid} outlived the plugin");
}

pub fn wait_for_file(path: &Path, secs: u64) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if let Ok(t) = std::fs::read_to_string(path) {
            return t;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} did not appear within {secs}s", path.display());
}
