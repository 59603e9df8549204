// SPDX-License-Identifier: MPL-2.0
//! moto's server mode, for SQS and S3, on a free port (the serve tests and
//! serve_bench share it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto in server mode on a free port; killed when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is missing: run scripts/setup.sh, which installs moto[server]");
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto's server exited ({status}): is moto[server] installed? \
                     scripts/setup.sh installs it (python3 -m pip install 'moto[server]')"
                );
            }
            assert!(Instant::now() < deadline, "moto's server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// SQS and S3 clients on this moto (path-style S3).
    pub fn clients(&self, key: &str, secret: &str) -> (aws_sdk_sqs::Client, aws_sdk_s3::Client) {
        let creds = aws_sdk_s3::config::Credentials::new(key, secret, None, None, "moto");
        let region = aws_sdk_s3::config::Region::new("us-east-1");
        let http = aws_smithy_http_client::Builder::new().build_http();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::new()
                .behavior_version_latest()
                .region(region.clone())
                .http_client(http.clone())
                .credentials_provider(creds.clone())
                .endpoint_url(&self.endpoint)
                .force_path_style(true)
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::new()
                .behavior_version_latest()
                .region(region)
                .http_client(http)
                .credentials_provider(creds)
                .endpoint_url(&self.endpoint)
                .build(),
        );
        (sqs, s3)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's own SQS queue (with a dead-letter queue after `max_receives`)
/// and S3 bucket on moto, and its clients.
pub struct Aws {
    pub rt: tokio::runtime::Runtime,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub queue: String,
    pub dlq: String,
    pub moto: Moto,
}

pub const BUCKET: &str = "recordings";

impl Aws {
    pub fn start(max_receives: u32) -> Aws {
        let moto = Moto::start();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (sqs, s3) = moto.clients("AKIDTEST", "test-secret");
        let (queue, dlq) = rt.block_on(async {
            s3.create_bucket().bucket(BUCKET).send().await.unwrap();
            let dlq = sqs
                .create_queue()
                .queue_name("calls-dead")
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap();
            let arn = sqs
                .get_queue_attributes()
                .queue_url(&dlq)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send()
                .await
                .unwrap()
                .attributes
                .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
                .clone();
            let redrive =
                format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receives}"}}"#);
            let queue = sqs
                .create_queue()
                .queue_name("calls")
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                    redrive,
                )
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                    "3",
                )
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap();
            (queue, dlq)
        });
        Aws {
            rt,
            sqs,
            s3,
            queue,
            dlq,
            moto,
        }
    }

    pub fn send(&self, body: &str) {
        self.rt
            .block_on(
                self.sqs
                    .send_message()
                    .queue_url(&self.queue)
                    .message_body(body)
                    .send(),
            )
            .unwrap();
    }

    /// The WAV object's bytes and its metadata, if it is there.
    pub fn object(
        &self,
        key: &str,
    ) -> Option<(Vec<u8>, std::collections::HashMap<String, String>)> {
        self.rt.block_on(async {
            let out = self
                .s3
                .get_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .ok()?;
            let meta = out.metadata.clone().unwrap_or_default();
            Some((
                out.body.collect().await.unwrap().into_bytes().to_vec(),
                meta,
            ))
        })
    }

    pub fn keys(&self) -> Vec<String> {
        self.rt.block_on(async {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(BUCKET)
                .send()
                .await
                .unwrap();
            out.contents
                .unwrap_or_default()
                .into_iter()
                .filter_map(|o| o.key)
                .collect()
        })
    }

    /// Messages in a queue, visible or not.
    pub fn depth(&self, url: &str) -> u64 {
        let (visible, hidden) = self.visibility(url);
        visible + hidden
    }

    /// Messages in a queue: (visible, not visible).
    pub fn visibility(&self, url: &str) -> (u64, u64) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        self.rt.block_on(async {
            let attrs = self
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(A::ApproximateNumberOfMessages)
                .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await
                .unwrap()
                .attributes
                .unwrap();
            let n = |a: A| {
                attrs
                    .get(&a)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (
                n(A::ApproximateNumberOfMessages),
                n(A::ApproximateNumberOfMessagesNotVisible),
            )
        })
    }
}
