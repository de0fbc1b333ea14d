//! `ota keygen` and `ota publish`: the publisher's commands (they run on a workstation or
//! in CI, never on a device).

use std::io::{self, IsTerminal, Write};

use anyhow::{anyhow, bail};
use ota::publish::{self, Input, Options};
use ota::signed;

use crate::OutputError;
use crate::args::{KeygenArgs, PasswordArgs, PublishArgs, PublishFormat};
use crate::print;

/// The password given by --password-file or --password-env, if any.
fn given_password(args: &PasswordArgs) -> anyhow::Result<Option<String>> {
    if let Some(file) = &args.password_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow!("cannot read --password-file {}: {e}", file.display()))?;
        // The first line, without its line ending: `echo secret > file` works.
        let line = text.lines().next().unwrap_or_default();
        return Ok(Some(line.to_owned()));
    }
    if let Some(var) = &args.password_env {
        let value = std::env::var(var).map_err(|_| {
            anyhow!(
                "--password-env {var}: the environment variable {var} is not set (or not UTF-8)"
            )
        })?;
        return Ok(Some(value));
    }
    Ok(None)
}

/// Whether a password may be asked for on the terminal.
fn can_prompt(args: &PasswordArgs) -> bool {
    !args.no_password && io::stdin().is_terminal()
}

/// `ota keygen`.
pub fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let mut password = given_password(&args.password)?;
    if password.is_none() && can_prompt(&args.password) {
        let first = rpassword::prompt_password(
            "Password for the new secret key (empty: none, the key is stored unencrypted): ",
        )
        .map_err(|e| anyhow!("cannot read the password from the terminal: {e}"))?;
        if !first.is_empty() {
            let again = rpassword::prompt_password("The same password again: ")
                .map_err(|e| anyhow!("cannot read the password from the terminal: {e}"))?;
            if again != first {
                bail!("the two passwords differ: nothing was written; run ota keygen again");
            }
            password = Some(first);
        }
    }
    let report = publish::keygen(&args.out, password.as_deref(), args.force)?;
    let out = &mut io::stdout().lock();
    let result = if args.json {
        print::json(out, &report)
    } else {
        print_keygen(out, &report)
    };
    result.map_err(OutputError)?;
    Ok(())
}

fn print_keygen(out: &mut impl Write, r: &publish::KeygenReport) -> io::Result<()> {
    writeln!(out, "key id {}", r.key_id)?;
    let protection = match r.encrypted {
        true => "password-protected",
        false => "not password-protected",
    };
    writeln!(
        out,
        "secret key: {} ({protection}; keep it secret: it signs releases)",
        r.secret_key_file.display()
    )?;
    writeln!(out, "public key: {}", r.public_key_file.display())?;
    writeln!(out, "devices trust it with this line in [source]:")?;
    writeln!(out, "public_key = \"{}\"", r.public_key)?;
    out.flush()
}

/// `ota publish`.
pub fn publish(args: &PublishArgs) -> anyhow::Result<()> {
    let input = match (&args.repo, &args.reference, &args.dir) {
        (Some(repo), Some(reference), None) => Input::Git {
            repo: repo.clone(),
            reference: reference.clone(),
        },
        (None, None, Some(dir)) => Input::Folder(dir.clone()),
        _ => bail!("give either --repo GITREPO --ref REF, or --dir FOLDER"),
    };
    let filter = match &args.config {
        Some(path) => ota::config::Config::load(path)?.filter,
        None => publish::filter(&args.allow, &args.ignore)?,
    };
    let options = Options {
        input,
        out: args.out.clone(),
        channel: args.channel.clone(),
        release: args.release.clone(),
        filter,
        expires_in: args.expires_in,
        rollout_percent: args.rollout_percent,
        keep: args.keep.map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
    };
    if args.deltas && args.format != PublishFormat::Original {
        bail!("--deltas writes the original updater's deltas: use it with --format original");
    }
    if args.format == PublishFormat::Original {
        return publish_original(args, &options);
    }
    let Some(key_path) = &args.key else {
        bail!("give the secret key with --key KEY (from `ota keygen`)");
    };
    let key_text = std::fs::read_to_string(key_path).map_err(|e| {
        anyhow!(
            "cannot read the secret key --key {}: {e}",
            key_path.display()
        )
    })?;
    let mut password = given_password(&args.password)?;
    if password.is_none()
        && signed::secret_key_is_encrypted(&key_text)
        && can_prompt(&args.password)
    {
        let prompt = format!("Password for {}: ", key_path.display());
        password = Some(
            rpassword::prompt_password(prompt)
                .map_err(|e| anyhow!("cannot read the password from the terminal: {e}"))?,
        );
    }
    let key = signed::load_secret_key(&key_text, password.as_deref())
        .map_err(|e| anyhow!("--key {}: {e}", key_path.display()))?;
    let summary = publish::publish(&options, &key)?;
    for warning in &summary.warnings {
        tracing::warn!("{warning}");
    }
    let out = &mut io::stdout().lock();
    let result = if args.json {
        print::json(out, &summary)
    } else {
        print_summary(out, &summary, &args.out)
    };
    result.map_err(OutputError)?;
    Ok(())
}

fn print_summary(
    out: &mut impl Write,
    s: &publish::Summary,
    site: &std::path::Path,
) -> io::Result<()> {
    writeln!(
        out,
        "published {} ({}) on channel {} as counter {}: {}",
        s.release,
        &s.commit[..12],
        s.channel,
        s.counter,
        site.join(&s.manifest).display()
    )?;
    writeln!(out, "files: {} ({})", s.files, print::bytes(s.bytes))?;
    writeln!(
        out,
        "objects: {} written ({}), {} already on the site",
        s.objects_written,
        print::bytes(s.bytes_written),
        s.objects_reused
    )?;
    writeln!(
        out,
        "file list: changes from {} earlier release(s) of the channel; pack {}; {} patch(es) \
         ({}); record {} (the files listed inline, for a GitHub release asset)",
        s.change_lists,
        print::bytes(s.pack_bytes),
        s.patches,
        print::bytes(s.patch_bytes),
        site.join(&s.record).display()
    )?;
    writeln!(
        out,
        "signed with key {}; expires {} (publish again before)",
        s.key_id, s.expires
    )?;
    if !s.pruned_releases.is_empty() || s.pruned_objects + s.pruned_packs + s.pruned_patches > 0 {
        writeln!(
            out,
            "pruned: {} release record(s), {} object(s), {} pack(s), {} patch(es) ({})",
            s.pruned_releases.len(),
            s.pruned_objects,
            s.pruned_packs,
            s.pruned_patches,
            print::bytes(s.pruned_bytes)
        )?;
    }
    out.flush()
}

/// `ota publish --format original`: the original updater's manifest.json in --out.
fn publish_original(args: &PublishArgs, options: &Options) -> anyhow::Result<()> {
    let hmac_key = match (&args.hmac_key, &args.hmac_key_file) {
        (Some(key), _) => Some(key.trim().to_owned()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| anyhow!("cannot read --hmac-key-file {}: {e}", file.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if hmac_key.as_deref() == Some("") {
        bail!(
            "the HMAC key is empty: give the devices' `manifest_key`, or no key for an unsigned manifest"
        );
    }
    let deltas_from = match (&args.from, &options.input) {
        (None, _) => None,
        (Some(from), Input::Git { repo, .. }) => Some(Input::Git {
            repo: repo.clone(),
            reference: from.clone(),
        }),
        (Some(from), Input::Folder(_)) => Some(Input::Folder(from.into())),
    };
    let extra = publish::OriginalOptions {
        deltas_from,
        hmac_key: hmac_key.map(String::into_bytes),
        version: args.release_version.clone(),
        post_update: args.post_update.clone(),
        deletes: args.deletes.clone(),
    };
    let summary = publish::publish_original(options, &extra)?;
    for warning in &summary.warnings {
        tracing::warn!("{warning}");
    }
    let out = &mut io::stdout().lock();
    let result = if args.json {
        print::json(out, &summary)
    } else {
        writeln!(
            out,
            "wrote {} ({}) for {} ({}): {} files, {} bytes, version {:?}; upload it as the \
             release's asset manifest.json",
            summary.manifest.display(),
            if summary.signed {
                "signed with the HMAC key"
            } else {
                "unsigned"
            },
            summary.release,
            &summary.commit[..12],
            summary.files,
            summary.bytes,
            summary.version
        )
        .and_then(|()| match &summary.deltas {
            Some(d) => writeln!(
                out,
                "wrote {} deltas ({} bytes, for {} bytes of files) in {}; {} changed files \
                 have none (not smaller than the file){}; upload them beside manifest.json",
                d.written,
                d.bytes,
                d.file_bytes,
                d.dir.display(),
                d.not_smaller,
                match d.removed {
                    0 => String::new(),
                    n => format!("; removed {n} deltas of an earlier publish"),
                }
            ),
            None => Ok(()),
        })
        .and_then(|()| out.flush())
    };
    result.map_err(OutputError)?;
    Ok(())
}
