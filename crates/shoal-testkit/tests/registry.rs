//! A real `docker-registry` with htpasswd auth, and a test image pushed to it with skopeo.

mod common;

use std::net::SocketAddr;

use common::Client;
use shoal_testkit::{sha256_hex, Credentials, OciImage, Registry, RegistryConfig};

#[tokio::test]
async fn a_pushed_image_is_served_to_its_user_only_and_its_gets_are_counted() {
    let user = Credentials {
        user: "ci".into(),
        password: "s3cret-pass".into(),
    };
    let registry = match Registry::start(RegistryConfig {
        auth: Some(user.clone()),
    }) {
        Ok(registry) => registry,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("SKIP: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::build(dir.path(), "v1", &[200_000, 300_000], 11).unwrap();
    image.push(&registry, "team/app", Some(&user)).unwrap();

    let layer = &image.layers[1];
    let path = format!("/v2/team/app/blobs/{}", layer.digest());
    let addr = SocketAddr::from(([127, 0, 0, 1], registry.port()));

    let anonymous = Client::open(addr, None)
        .await
        .request("GET", &path, &[])
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"shoal-test\"")
    );

    let reply = Client::open(addr, None)
        .await
        .request("GET", &path, &[("Authorization", &user.basic())])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(sha256_hex(&reply.body), layer.hex);
    assert_eq!(registry.blob_gets(&layer.hex), [layer.size]);
    assert!(registry.blob_path(&layer.hex).is_file());
}
