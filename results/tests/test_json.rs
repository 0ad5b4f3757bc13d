//! `test.json` is read strictly by the report: an unknown or mistyped top-level field is an
//! error naming it, never silently ignored.

#[test]
fn test_json_with_an_unknown_or_mistyped_field_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("test.json");
    std::fs::write(&path, r#"{"spec": {}, "seed": 3, "sede": 4}"#).expect("write");
    let e = results::report::read_test_json(&path).expect_err("unknown field");
    assert!(e.to_string().contains("field `sede`: unknown"), "{e}");
    std::fs::write(&path, r#"{"spec": [], "seed": 3}"#).expect("write");
    let e = results::report::read_test_json(&path).expect_err("mistyped");
    assert!(
        e.to_string().contains("field `spec`: must be object"),
        "{e}"
    );
    std::fs::write(
        &path,
        r#"{"spec": {"name": "x"}, "seed": 3, "versions": {}}"#,
    )
    .expect("w");
    assert_eq!(
        results::report::read_test_json(&path).expect("ok")["seed"],
        3
    );
    std::fs::write(&path, "{not json").expect("write");
    assert!(results::report::read_test_json(&path).is_err());
    assert_eq!(
        results::report::read_test_json(&dir.path().join("absent.json")).expect("absent"),
        serde_json::Value::Null
    );
}
