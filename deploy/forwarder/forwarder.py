# SPDX-License-Identifier: MPL-2.0
"""The contact flow's "Invoke AWS Lambda function" block, after "Start media
streaming": puts the flow's event on the queue kvs-record serve reads.
Environment: QUEUE_URL. Role: sqs:SendMessage on that queue."""
import json
import os

import boto3

sqs = boto3.client("sqs")


def handler(event, context=None):
    sqs.send_message(QueueUrl=os.environ["QUEUE_URL"], MessageBody=json.dumps(event))
    return {"queued": True}


if __name__ == "__main__":
    import sys

    print(json.dumps(handler(json.load(sys.stdin))))
