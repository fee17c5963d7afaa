//! The artifact store against a real S3-compatible server (s3s-fs): directories go up whole (a
//! large file in parts), come back on another host checked by hash, and a wrong key or a
//! changed object is refused.

use prl_artifacts::{ArtifactStore, S3Options, verify_local, write_manifest};
use prl_integration_tests::S3Server;

#[tokio::test]
async fn a_checkpoint_directory_travels_through_an_s3_server_and_is_checked() {
    let tmp = std::env::temp_dir().join(format!("prl-s3-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let s3 = S3Server::start(&tmp.join("server"));
    let store = ArtifactStore::open(&s3.store_url("team/prl"), &s3.options()).unwrap();

    let src = tmp.join("host-a/checkpoints/run/step-00000010");
    std::fs::create_dir_all(&src).unwrap();
    // Big enough to go up in parts.
    let weights: Vec<u8> = (0..(80u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("model.safetensors"), &weights).unwrap();
    std::fs::write(src.join("config.json"), br#"{"hidden_size": 8}"#).unwrap();
    let (sha256, size) = write_manifest(&src).unwrap();
    let stored = store
        .put_dir("checkpoints/run/step-00000010", &src)
        .await
        .unwrap();
    assert_eq!(
        stored.uri,
        "s3://prl/team/prl/checkpoints/run/step-00000010/"
    );
    assert_eq!((stored.sha256.clone(), stored.size_bytes), (sha256, size));
    // The server holds the objects under the prefix.
    let on_server = tmp.join("server/prl/team/prl/checkpoints/run/step-00000010");
    assert_eq!(
        std::fs::read(on_server.join("model.safetensors")).unwrap(),
        weights
    );

    let host_b = tmp.join("host-b");
    let fetched = store
        .fetch_dir(&stored.uri, &stored.sha256, &host_b)
        .await
        .unwrap();
    assert_eq!(fetched, host_b.join("checkpoints/run/step-00000010"));
    verify_local(&fetched, &stored.sha256).unwrap();
    assert_eq!(
        std::fs::read(fetched.join("model.safetensors")).unwrap(),
        weights
    );

    // The server checks signatures: a wrong secret reads nothing.
    let forged = ArtifactStore::open(
        &s3.store_url("team/prl"),
        &S3Options {
            secret_access_key: Some("not-the-secret".into()),
            ..s3.options()
        },
    )
    .unwrap();
    let refused = forged
        .fetch_dir(&stored.uri, &stored.sha256, &tmp.join("host-c"))
        .await
        .unwrap_err();
    assert!(format!("{refused:#}").contains("manifest"), "{refused:#}");

    // An object changed on the server is refused by its hash, naming the file.
    std::fs::write(on_server.join("config.json"), br#"{"hidden_size": 9}"#).unwrap();
    let refused = store
        .fetch_dir(&stored.uri, &stored.sha256, &tmp.join("host-d"))
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("config.json"),
        "{refused:#}"
    );
    // A URI in another store is refused before anything is read.
    let elsewhere = store
        .fetch_dir("s3://other/x/", &stored.sha256, &tmp.join("host-e"))
        .await
        .unwrap_err();
    assert!(
        elsewhere
            .to_string()
            .contains("not in this host's artifact store")
    );

    // A single file (an uploaded dataset's) goes up under its key and comes back checked.
    let dataset = tmp.join("host-a/train.jsonl");
    std::fs::write(&dataset, b"{\"question\": \"1+1?\", \"answer\": 2}\n").unwrap();
    let (sha256, size) = prl_artifacts::hash_file(&dataset).unwrap();
    let key = format!("datasets/{sha256}.jsonl");
    let file = store.put_file(&key, &dataset).await.unwrap();
    assert_eq!(file.uri, format!("s3://prl/team/prl/{key}"));
    assert_eq!(store.size_of(&file.uri).await.unwrap(), Some(size));
    let absent = "s3://prl/team/prl/datasets/absent.jsonl";
    assert_eq!(store.size_of(absent).await.unwrap(), None);
    let fetched = store.fetch_file(&file.uri, &sha256, &host_b).await.unwrap();
    assert_eq!(
        std::fs::read(fetched).unwrap(),
        std::fs::read(&dataset).unwrap()
    );
    assert!(store.read(absent).await.unwrap().is_none());
    let (streamed, mut bytes) = store.read(&file.uri).await.unwrap().unwrap();
    let mut read = vec![];
    while let Some(chunk) = futures::StreamExt::next(&mut bytes).await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!((streamed, read), (size, std::fs::read(&dataset).unwrap()));
    let _ = std::fs::remove_dir_all(&tmp);
}
