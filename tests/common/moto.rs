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
