//! Stamps the binary with its commit and build date for `p2pu --version`
//! (`P2PU_VERSION`, with `P2PU_COMMIT` and `P2PU_BUILD_DATE`). A source tarball has no .git: the commit is then left
//! out rather than failing the build. The date is SOURCE_DATE_EPOCH when set (reproducible
//! builds), else the commit's date, else today.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// `days` since 1970-01-01 as a proleptic Gregorian date (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit or checkout moves HEAD (or the branch it names): stamp again.
    for file in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    // Only this source's own checkout: a tarball unpacked inside some other repository must
    // not take that repository's commit.
    let own_checkout = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        std::fs::canonicalize(top).ok() == std::fs::canonicalize(here).ok()
    });
    let commit = own_checkout
        .then(|| git(&["rev-parse", "--short=10", "HEAD"]))
        .flatten()
        .unwrap_or_default();
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .or_else(|| {
            own_checkout
                .then(|| git(&["log", "-1", "--format=%ct"]))
                .flatten()
                .and_then(|s| s.parse().ok())
        })
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    let (y, m, d) = civil(epoch.div_euclid(86_400));
    let date = format!("{y:04}-{m:02}-{d:02}");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let stamp = if commit.is_empty() {
        date.clone()
    } else {
        format!("{commit} {date}")
    };
    println!("cargo:rustc-env=P2PU_COMMIT={commit}");
    println!("cargo:rustc-env=P2PU_BUILD_DATE={date}");
    println!("cargo:rustc-env=P2PU_VERSION={version} ({stamp})");
}
