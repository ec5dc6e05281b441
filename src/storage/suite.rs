//! The storage contract suite: one set of checks that every [`ObjectStore`] and
//! [`KeyValueStore`] implementation must pass. Native tests run it over the in-memory twins
//! (tests/storage_contract.rs); the end-to-end tests run it over real R2 and KV on workerd
//! through the Worker's self-test route (enabled only by the `WHARF_SELFTEST` variable).
//!
//! Each check works under its own `prefix` and removes what it wrote.

use super::*;
use serde_json::json;

/// The outcome of one check: `{"name","error"}`, the error null when it passed.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: &'static str,
    pub error: Option<String>,
}

type Check = std::result::Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn se(e: StorageError) -> String {
    e.to_string()
}

/// Runs every object-store check under `prefix`.
pub async fn run_objects<O: ObjectStore>(store: &O, prefix: &str) -> Vec<CaseResult> {
    let mut out = Vec::new();
    macro_rules! case {
        ($f:ident) => {
            out.push(CaseResult { name: stringify!($f), error: $f(store, prefix).await.err() });
        };
    }
    case!(missing_objects_are_none_and_deleting_them_succeeds);
    case!(put_then_get_returns_bytes_and_metadata);
    case!(conditional_put_writes_only_when_the_etag_still_matches);
    case!(list_returns_prefixed_keys_in_order_with_metadata_and_a_cursor);
    case!(multipart_upload_is_invisible_until_completed);
    case!(ranged_reads_return_just_those_bytes);
    case!(aborted_multipart_upload_leaves_nothing);
    out
}

/// Runs every key-value check under `prefix`.
pub async fn run_kv<K: KeyValueStore>(store: &K, prefix: &str) -> Vec<CaseResult> {
    let mut out = Vec::new();
    macro_rules! case {
        ($f:ident) => {
            out.push(CaseResult { name: stringify!($f), error: $f(store, prefix).await.err() });
        };
    }
    case!(kv_missing_keys_are_none);
    case!(kv_put_get_delete_with_metadata);
    case!(kv_list_returns_prefixed_keys_in_order_with_metadata_and_a_cursor);
    out
}

async fn missing_objects_are_none_and_deleting_them_succeeds<O: ObjectStore>(s: &O, p: &str) -> Check {
    let k = format!("{p}missing");
    ensure!(s.head(&k).await.map_err(se)?.is_none(), "head of a missing key");
    ensure!(s.get(&k, None).await.map_err(se)?.is_none(), "get of a missing key");
    ensure!(s.get_bytes(&k).await.map_err(se)?.is_none(), "get_bytes of a missing key");
    s.delete(&k).await.map_err(se)
}

async fn put_then_get_returns_bytes_and_metadata<O: ObjectStore>(s: &O, p: &str) -> Check {
    let k = format!("{p}obj");
    let mut custom = Metadata::new();
    custom.insert("size".to_owned(), "5".to_owned());
    let opts =
        PutOptions { content_type: Some("application/x-test".into()), custom: custom.clone(), if_etag_matches: None };
    let written = s.put(&k, b"hello".to_vec(), opts).await.map_err(se)?.ok_or("unconditional put refused")?;
    ensure!(written.size == 5, "size {}", written.size);
    let head = s.head(&k).await.map_err(se)?.ok_or("head after put")?;
    ensure!(head.size == 5 && head.custom == custom, "head meta {head:?}");
    ensure!(head.content_type.as_deref() == Some("application/x-test"), "content type {:?}", head.content_type);
    let (meta, bytes) = s.get_bytes(&k).await.map_err(se)?.ok_or("get after put")?;
    ensure!(bytes == b"hello" && meta.etag == head.etag, "bytes or etag differ");
    ensure!(s.get(&k, None).await.map_err(se)?.is_some(), "streamed get after put");
    let ranged = s.get(&k, Some(ByteRange { offset: 1, length: 3 })).await.map_err(se)?;
    ensure!(ranged.is_some_and(|(m, _)| m.size == 5), "ranged get must describe the whole object");
    s.put(&k, b"bye".to_vec(), PutOptions::default()).await.map_err(se)?;
    let (meta2, bytes2) = s.get_bytes(&k).await.map_err(se)?.ok_or("get after overwrite")?;
    ensure!(bytes2 == b"bye" && meta2.etag != meta.etag, "overwrite not seen or etag unchanged");
    s.delete(&k).await.map_err(se)?;
    ensure!(s.head(&k).await.map_err(se)?.is_none(), "object still there after delete");
    Ok(())
}

async fn conditional_put_writes_only_when_the_etag_still_matches<O: ObjectStore>(s: &O, p: &str) -> Check {
    let k = format!("{p}cond");
    let first = s.put(&k, b"1".to_vec(), PutOptions::default()).await.map_err(se)?.ok_or("first put")?;
    let second = s
        .put(&k, b"2".to_vec(), PutOptions { if_etag_matches: Some(first.etag.clone()), ..Default::default() })
        .await
        .map_err(se)?;
    ensure!(second.is_some(), "put with the current etag was refused");
    let stale = s
        .put(&k, b"3".to_vec(), PutOptions { if_etag_matches: Some(first.etag), ..Default::default() })
        .await
        .map_err(se)?;
    ensure!(stale.is_none(), "put with a stale etag was accepted");
    let (_, bytes) = s.get_bytes(&k).await.map_err(se)?.ok_or("object gone")?;
    ensure!(bytes == b"2", "stale conditional put changed the object");
    s.delete(&k).await.map_err(se)
}

async fn list_returns_prefixed_keys_in_order_with_metadata_and_a_cursor<O: ObjectStore>(s: &O, p: &str) -> Check {
    let dir = format!("{p}list/");
    for name in ["c", "a", "b"] {
        let mut custom = Metadata::new();
        custom.insert("n".to_owned(), name.to_owned());
        s.put(&format!("{dir}{name}"), vec![], PutOptions { custom, ..Default::default() }).await.map_err(se)?;
    }
    s.put(&format!("{p}listx"), vec![], PutOptions::default()).await.map_err(se)?;
    let first = s.list(&dir, ListFrom::Beginning, 2).await.map_err(se)?;
    let keys: Vec<_> = first.objects.iter().map(|o| o.key.clone()).collect();
    ensure!(keys == [format!("{dir}a"), format!("{dir}b")], "first page {keys:?}");
    ensure!(first.objects[0].custom.get("n").map(String::as_str) == Some("a"), "listed metadata missing");
    let cursor = first.cursor.ok_or("no cursor though a key remains")?;
    let second = s.list(&dir, ListFrom::Cursor(&cursor), 2).await.map_err(se)?;
    let keys: Vec<_> = second.objects.iter().map(|o| o.key.clone()).collect();
    ensure!(keys == [format!("{dir}c")], "second page {keys:?}");
    ensure!(second.cursor.is_none(), "cursor on the last page");
    let after = s.list(&dir, ListFrom::After(&format!("{dir}a")), 10).await.map_err(se)?;
    let keys: Vec<_> = after.objects.iter().map(|o| o.key.clone()).collect();
    ensure!(keys == [format!("{dir}b"), format!("{dir}c")], "listing after a key: {keys:?}");
    for name in ["a", "b", "c"] {
        s.delete(&format!("{dir}{name}")).await.map_err(se)?;
    }
    s.delete(&format!("{p}listx")).await.map_err(se)
}

async fn multipart_upload_is_invisible_until_completed<O: ObjectStore>(s: &O, p: &str) -> Check {
    let k = format!("{p}multi");
    let id = s
        .create_multipart(
            &k,
            PutOptions { content_type: Some("application/octet-stream".into()), ..Default::default() },
        )
        .await
        .map_err(se)?;
    let a = vec![7u8; MIN_PART_SIZE];
    let one = s.upload_part(&k, &id, 1, a.clone()).await.map_err(se)?;
    let two = s.upload_part(&k, &id, 2, b"tail".to_vec()).await.map_err(se)?;
    ensure!(s.head(&k).await.map_err(se)?.is_none(), "multipart object visible before completion");
    let meta = s.complete_multipart(&k, &id, &[one, two]).await.map_err(se)?;
    ensure!(meta.size == (MIN_PART_SIZE + 4) as u64, "completed size {}", meta.size);
    let (_, bytes) = s.get_bytes(&k).await.map_err(se)?.ok_or("completed object missing")?;
    ensure!(
        bytes.len() == MIN_PART_SIZE + 4 && bytes[..MIN_PART_SIZE] == a[..] && &bytes[MIN_PART_SIZE..] == b"tail",
        "completed bytes differ"
    );
    s.delete(&k).await.map_err(se)
}

async fn ranged_reads_return_just_those_bytes<O: ObjectStore>(s: &O, p: &str) -> Check {
    let k = format!("{p}ranged");
    let bytes: Vec<u8> = (0..=255u8).collect();
    s.put(&k, bytes.clone(), PutOptions::default()).await.map_err(se)?;
    for (offset, length) in [(0, 256), (0, 1), (100, 50), (255, 1)] {
        let got = s.read_range(&k, ByteRange { offset, length }).await.map_err(se)?.ok_or("object missing")?;
        let want = &bytes[offset as usize..(offset + length) as usize];
        ensure!(got == want, "bytes {offset}+{length}: {} bytes, not the expected {}", got.len(), want.len());
    }
    let missing = s.read_range(&format!("{p}ranged-missing"), ByteRange { offset: 0, length: 1 }).await;
    ensure!(missing.map_err(se)?.is_none(), "a ranged read of a missing object");
    s.delete(&k).await.map_err(se)
}

async fn aborted_multipart_upload_leaves_nothing<O: ObjectStore>(s: &O, p: &str) -> Check {
    let k = format!("{p}aborted");
    let id = s.create_multipart(&k, PutOptions::default()).await.map_err(se)?;
    s.upload_part(&k, &id, 1, b"x".to_vec()).await.map_err(se)?;
    s.abort_multipart(&k, &id).await.map_err(se)?;
    ensure!(s.head(&k).await.map_err(se)?.is_none(), "aborted upload visible");
    ensure!(s.upload_part(&k, &id, 2, b"y".to_vec()).await.is_err(), "part accepted after abort");
    Ok(())
}

async fn kv_missing_keys_are_none<K: KeyValueStore>(s: &K, p: &str) -> Check {
    let k = format!("{p}missing");
    ensure!(s.get(&k).await.map_err(se)?.is_none(), "get of a missing key");
    s.delete(&k).await.map_err(se)
}

async fn kv_put_get_delete_with_metadata<K: KeyValueStore>(s: &K, p: &str) -> Check {
    let k = format!("{p}key");
    let meta = json!({ "digest": "sha256:x", "size": 3 });
    s.put(&k, "value", Some(&meta)).await.map_err(se)?;
    let got = s.get(&k).await.map_err(se)?.ok_or("get after put")?;
    ensure!(got.value == "value" && got.metadata.as_ref() == Some(&meta), "got {got:?}");
    s.put(&k, "other", None).await.map_err(se)?;
    let got = s.get(&k).await.map_err(se)?.ok_or("get after overwrite")?;
    ensure!(got.value == "other" && got.metadata.is_none(), "overwrite kept old metadata: {got:?}");
    s.delete(&k).await.map_err(se)?;
    ensure!(s.get(&k).await.map_err(se)?.is_none(), "key still there after delete");
    Ok(())
}

async fn kv_list_returns_prefixed_keys_in_order_with_metadata_and_a_cursor<K: KeyValueStore>(s: &K, p: &str) -> Check {
    let dir = format!("{p}list:");
    for name in ["b", "c", "a"] {
        s.put(&format!("{dir}{name}"), name, Some(&json!({ "n": name }))).await.map_err(se)?;
    }
    s.put(&format!("{p}listz"), "z", None).await.map_err(se)?;
    let first = s.list(&dir, None, 2).await.map_err(se)?;
    let names: Vec<_> = first.keys.iter().map(|k| k.name.clone()).collect();
    ensure!(names == [format!("{dir}a"), format!("{dir}b")], "first page {names:?}");
    ensure!(first.keys[1].metadata == Some(json!({ "n": "b" })), "listed metadata {:?}", first.keys[1].metadata);
    let cursor = first.cursor.ok_or("no cursor though a key remains")?;
    let second = s.list(&dir, Some(&cursor), 2).await.map_err(se)?;
    let names: Vec<_> = second.keys.iter().map(|k| k.name.clone()).collect();
    ensure!(names == [format!("{dir}c")], "second page {names:?}");
    ensure!(second.cursor.is_none(), "cursor on the last page");
    for name in ["a", "b", "c"] {
        s.delete(&format!("{dir}{name}")).await.map_err(se)?;
    }
    s.delete(&format!("{p}listz")).await.map_err(se)
}
