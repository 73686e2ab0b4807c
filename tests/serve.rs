//! `sam-cobot serve` against a running server on 127.0.0.1 (a free port): the API answers as the
//! CLI does, caches, and refuses bad requests with a JSON error while it keeps serving.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::server::{BASE, Server, call, mask_of, post_json, start};
use common::{fixtures, succeeds};
use serde_json::{Value, json};

fn image_bytes() -> Vec<u8> {
    std::fs::read(fixtures().join("image_300x200.png")).unwrap()
}

fn embed(server: &Server) -> (u16, Value) {
    call(
        ureq::post(&format!("{}/embed?model=base", server.url)),
        Some(&image_bytes()),
    )
}

#[test]
fn predict_answers_as_the_cli_does_and_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("cache"), &[]);
    let (status, models) = call(ureq::get(&format!("{}/models", server.url)), None);
    assert_eq!(status, 200);
    assert_eq!(models[0]["id"], "base");
    assert_eq!(models[0]["image_size"], 256);

    let (status, embedded) = embed(&server);
    assert_eq!(status, 200, "{embedded}");
    assert_eq!(
        (embedded["width"].as_u64(), embedded["height"].as_u64()),
        (Some(300), Some(200))
    );
    assert_eq!(embedded["cached"], false);
    let image = embedded["image"].as_str().unwrap().to_string();
    let prompts = json!({"model": "base", "image": image, "boxes": [[60, 40, 220, 160]], "points": [[120, 90, 1]]});
    let (status, first) = post_json(&server, "/predict", &prompts);
    assert_eq!(status, 200, "{first}");

    // The CLI on the same prompts.
    let png = dir.path().join("mask.png");
    succeeds(
        Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
            .args(["--threads", "2", "predict", "--checkpoint", BASE, "--image"])
            .arg(fixtures().join("image_300x200.png"))
            .args(["--box", "60,40,220,160", "--point", "120,90,1", "--out"])
            .arg(&png),
    );
    let cli: Vec<u8> = image::open(&png)
        .unwrap()
        .to_luma8()
        .pixels()
        .map(|p| u8::from(p.0[0] == 255))
        .collect();
    assert_eq!(mask_of(&first, 0), cli, "the API's mask equals predict's");

    // Embedded again: from the cache, the same answer.
    let (_, again) = embed(&server);
    assert_eq!(again["cached"], true);
    let (_, second) = post_json(&server, "/predict", &prompts);
    assert_eq!(mask_of(&second, 0), mask_of(&first, 0));
    assert_eq!(
        second["masks"][0]["predicted_iou"],
        first["masks"][0]["predicted_iou"]
    );
    drop(server);

    // A new server finds the embedding on disk.
    let server = start(&dir.path().join("cache"), &[]);
    let (_, from_disk) = embed(&server);
    assert_eq!(from_disk["cached"], true);
    let (_, third) = post_json(&server, "/predict", &prompts);
    assert_eq!(mask_of(&third, 0), mask_of(&first, 0));

    // Multimask: three candidates; refinement with a mask input.
    let multi =
        json!({"model": "base", "image": image, "points": [[120, 90, 1]], "multimask": true});
    let (status, three) = post_json(&server, "/predict", &multi);
    assert_eq!(status, 200);
    assert_eq!(three["masks"].as_array().unwrap().len(), 3);
    let refine = json!({"model": "base", "image": image, "points": [[120, 90, 1], [250, 150, 0]],
        "mask_input": three["masks"][0]["low_res_logits"]});
    let (status, refined) = post_json(&server, "/predict", &refine);
    assert_eq!(status, 200, "{refined}");

    let (status, all) = post_json(
        &server,
        "/everything",
        &json!({"model": "base", "image": image,
            "settings": {"points_per_side": 16, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7}}),
    );
    assert_eq!(status, 200, "{all}");
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("amg/grid.json")).unwrap())
            .unwrap();
    assert_eq!(
        all.as_array().unwrap().len(),
        fixture["masks"].as_array().unwrap().len()
    );
    assert_eq!(
        all[0]["segmentation"]["counts"],
        fixture["masks"][0]["coco"]
    );
}

#[test]
fn bad_requests_get_a_json_error_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("cache"), &["--max-image-pixels", "50000"]);
    let url = &server.url;
    let error = |(status, body): (u16, Value)| {
        (
            status,
            body["error"].as_str().unwrap_or_default().to_string(),
        )
    };

    let (status, message) = error(call(
        ureq::post(&format!("{url}/embed?model=base")),
        Some(b"not an image"),
    ));
    assert_eq!(status, 415, "{message}");
    assert!(message.contains("not a"), "{message}");

    let (status, message) = error(embed(&server));
    assert_eq!(status, 413, "{message}");
    assert!(message.contains("300x200 = 60000 pixels"), "{message}");

    let (status, message) = error(call(
        ureq::post(&format!("{url}/embed?model=other")),
        Some(&image_bytes()),
    ));
    assert_eq!(status, 404);
    assert!(message.contains("unknown model 'other'"), "{message}");

    let (status, message) = error(post_json(&server, "/predict", &json!({"model": "base"})));
    assert_eq!(status, 422, "{message}");
    let request = ureq::post(&format!("{url}/predict")).set("Content-Type", "application/json");
    let (status, message) = error(call(request, Some(b"{not json")));
    assert_eq!(status, 400, "{message}");
    assert!(message.starts_with("malformed request"), "{message}");

    let (status, message) = error(post_json(
        &server,
        "/predict",
        &json!({"model": "base", "image": "abc", "points": [[1, 1, 1]]}),
    ));
    assert_eq!(status, 404);
    assert!(message.contains("POST it to /embed first"), "{message}");

    let (status, _) = error(call(ureq::get(&format!("{url}/nowhere")), None));
    assert_eq!(status, 404);

    // Still serving: a small image embeds, and a point outside it is refused.
    let small = dir.path().join("small.png");
    image::RgbImage::from_pixel(100, 80, image::Rgb([90, 120, 150]))
        .save(&small)
        .unwrap();
    let (status, embedded) = call(
        ureq::post(&format!("{url}/embed?model=base")),
        Some(&std::fs::read(&small).unwrap()),
    );
    assert_eq!(status, 200, "{embedded}");
    let outside = json!({"model": "base", "image": embedded["image"], "points": [[150, 10, 1]]});
    let (status, message) = error(post_json(&server, "/predict", &outside));
    assert_eq!(status, 400);
    assert_eq!(message, "point 150,10 lies outside the 100x80 image");
    let bad_mask = json!({"model": "base", "image": embedded["image"], "points": [[10, 10, 1]], "mask_input": "AAAA"});
    let (status, message) = error(post_json(&server, "/predict", &bad_mask));
    assert_eq!(status, 400);
    assert!(
        message.starts_with(
            "mask_input has 3 bytes; this model's low-resolution masks are 4096 float32"
        ),
        "{message}"
    );
}

#[test]
fn page_and_its_files_are_served_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::copy(fixtures().join("image_300x200.png"), images.join("a.png")).unwrap();
    let server = start(
        &dir.path().join("cache"),
        &["--images", images.to_str().unwrap()],
    );
    for route in ["/", "/static/app.js", "/static/style.css"] {
        let response = ureq::get(&format!("{}{route}", server.url)).call().unwrap();
        assert_eq!(response.status(), 200, "{route}");
    }
    let (_, listed) = call(ureq::get(&format!("{}/images", server.url)), None);
    assert_eq!(listed, json!(["a.png"]));
    let (status, embedded) = call(
        ureq::post(&format!("{}/embed?model=base&name=a.png", server.url)),
        Some(b""),
    );
    assert_eq!(status, 200, "{embedded}");
    let (status, _) = call(
        ureq::get(&format!("{}/images/..%2Fcache", server.url)),
        None,
    );
    assert_eq!(status, 404);
    let _: PathBuf = images;
}

#[test]
fn requests_beyond_the_queue_are_refused_with_429() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir.path().join("cache"),
        &["--max-concurrent", "1", "--max-queued", "0"],
    );
    let (_, embedded) = embed(&server);
    let slow = json!({"model": "base", "image": embedded["image"],
        "settings": {"points_per_side": 20, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}});
    let url = server.url.clone();
    let busy = std::thread::spawn(move || {
        let request =
            ureq::post(&format!("{url}/everything")).set("Content-Type", "application/json");
        call(request, Some(slow.to_string().as_bytes())).0
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let point = json!({"model": "base", "image": embedded["image"], "points": [[10, 10, 1]]});
    let (status, body) = post_json(&server, "/predict", &point);
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many concurrent requests")
    );
    assert_eq!(busy.join().unwrap(), 200);
    let (status, _) = post_json(&server, "/predict", &point);
    assert_eq!(status, 200, "served again once the slot is free");
}
