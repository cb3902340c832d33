//! The commands, one thin file each (youki's `commands/`): each checks its input once,
//! before containerd is reached, then calls the library. anyhow is allowed here (the edge).
//!
//! - [`serve`]: `runlet serve`, a Cloud Run service in the foreground.
//! - [`job`]: `runlet job execute` and `runlet job executions list|describe`.
//! - [`image`]: `runlet image load|ls|rm`.
//!
//! What the commands share: reaching containerd ([`with_containerd`]), the image's user
//! ([`image_user`]) and writing to stdout ([`print`]).

pub mod image;
pub mod job;
pub mod serve;

use std::future::Future;
use std::io::Write;

use anyhow::Result;

use runlet::cli::GlobalArgs;
use runlet::image::ImageInfo;
use runlet::runtime::containerd::Containerd;
use runlet::runtime::embedded::{self, Connection};
use runlet::runtime::ocispec;

/// Connects to containerd (starting a private one when allowed and needed), runs `f`, and
/// stops the private containerd afterwards.
pub async fn with_containerd<F, Fut, T>(global: &GlobalArgs, f: F) -> Result<T>
where
    F: FnOnce(Containerd) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let Connection { client, embedded } = embedded::connect_or_start(
        &global.containerd_address,
        &global.state_dir,
        !global.no_embedded_containerd,
    )
    .await?;
    let result = f(client.clone()).await;
    if let Some(e) = embedded {
        e.stop(&client).await;
    }
    result
}

/// The numeric user and group to run an image as: its `User`, numeric, or a name looked up
/// in the image's own /etc/passwd and /etc/group. Shared by services and jobs.
pub async fn image_user(c: &Containerd, image: &ImageInfo) -> Result<(u32, u32)> {
    let field = image.config.user.clone().unwrap_or_default();
    if field.is_empty() || field.split(':').all(|p| p.parse::<u32>().is_ok()) {
        return Ok(ocispec::resolve_user(&image.name, &field, None, None)?);
    }
    let files = c
        .read_image_files(image, &["/etc/passwd", "/etc/group"])
        .await?;
    let text = |i: usize| {
        files
            .get(i)
            .cloned()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    Ok(ocispec::resolve_user(
        &image.name,
        &field,
        text(0).as_deref(),
        text(1).as_deref(),
    )?)
}

/// Writes to stdout, ignoring a closed pipe (`| head`).
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
