"""Stage backup.bucket: the bucket backups go to, and the credentials the host uses for it.

Oracle Cloud: the bucket is made through the oci SDK's Object Storage client
(ObjectStorageClient.get_namespace, get_bucket, create_bucket: oci/object_storage/
object_storage_client.py), and an S3 key pair for it as a Customer Secret Key through the identity
client (IdentityClient.list_customer_secret_keys, create_customer_secret_key: oci/identity/
identity_client.py; its `key` is the secret, shown by Oracle only in the answer to the create, and
its `id` is the access key ID). The host reaches the bucket through Object Storage's S3-compatible
API, https://<namespace>.compat.objectstorage.<region>.oraclecloud.com, signed for the region.
The secret is kept in the run's state (0600) and on the host (0600), nowhere else.

Any other S3-compatible service: the endpoint from the answers, the key pair from the environment
variables the answers name.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from installer.cloud.api import CloudError, OciCloud
from installer.components.backup import (
    _CREDENTIAL,
    OCI_ENDPOINT_FACT,
    OCI_KEY_FACT,
    OCI_SECRET_FACT,
    BackupAccess,
    env_value,
    target_of,
)
from installer.engine import StageContext, StageError

if TYPE_CHECKING:
    from installer.cloud.api import DryRunCloud

S3_ENDPOINT_ENV = "MATRIX_INSTALLER_OCI_S3_ENDPOINT"
"""Tests and labs: where Object Storage's S3-compatible API answers, instead of Oracle's (as
MATRIX_INSTALLER_OCI_ENDPOINT does for the SDK's own calls)."""
KEYS_PER_USER = 2
"""Oracle allows each user two Customer Secret Keys at a time (docs.oracle.com, Managing User
Credentials: "Each user can have up to two Customer Secret Keys at a time")."""


def key_name(server_name: str) -> str:
    return f"matrix-installer backups ({server_name})"


def compat_endpoint(namespace: str, region: str) -> str:
    """Object Storage's S3-compatible endpoint for a namespace and region (or the override)."""
    override = os.environ.get(S3_ENDPOINT_ENV, "").strip().rstrip("/")
    return override or f"https://{namespace}.compat.objectstorage.{region}.oraclecloud.com"


@dataclass(frozen=True)
class SecretKey:
    id: str
    display_name: str
    state: str


class ObjectStore:
    """The Object Storage and identity calls a backup bucket needs, made through the run's cloud
    client: its config, its announcements and its retries (OciCloud._call)."""

    def __init__(self, cloud: OciCloud) -> None:
        self.cloud = cloud
        oci = cloud._oci
        kwargs: dict[str, Any] = {
            "retry_strategy": oci.retry.NoneRetryStrategy(),
            "circuit_breaker_strategy": oci.circuit_breaker.NoCircuitBreakerStrategy(),
            "timeout": (10, 60),
        }
        if cloud.endpoint:
            kwargs["service_endpoint"] = cloud.endpoint
        self.storage = oci.object_storage.ObjectStorageClient(cloud.config, **kwargs)
        self.models = oci.object_storage.models
        self.identity_models = oci.identity.models

    @property
    def user(self) -> str:
        return str(self.cloud.config["user"])

    @property
    def region(self) -> str:
        return str(self.cloud.config["region"])

    async def namespace(self) -> str:
        return str((await self.cloud._call("object_storage.get_namespace()", self.storage.get_namespace)).data)

    async def bucket_exists(self, namespace: str, bucket: str) -> bool:
        try:
            await self.cloud._call(f"object_storage.get_bucket(namespace={namespace}, bucket={bucket})",
                                   self.storage.get_bucket, namespace, bucket)
        except CloudError as exc:
            if exc.not_found:
                return False
            raise
        return True

    async def create_bucket(self, namespace: str, bucket: str, compartment_id: str) -> None:
        details = self.models.CreateBucketDetails(name=bucket, compartment_id=compartment_id,
                                                  public_access_type="NoPublicAccess", storage_tier="Standard")
        try:
            await self.cloud._call(f"object_storage.create_bucket(namespace={namespace}, name={bucket}, "
                                   f"compartment={compartment_id}, public_access=NoPublicAccess)",
                                   self.storage.create_bucket, namespace, details)
        except CloudError as exc:
            if exc.status == 409 and exc.code == "BucketAlreadyExists":  # made meanwhile (a lost answer retried)
                return
            raise

    async def secret_keys(self) -> list[SecretKey]:
        found = await self.cloud._call(f"identity.list_customer_secret_keys(user={self.user})",
                                       self.cloud.identity.list_customer_secret_keys, self.user)
        return [SecretKey(k.id, k.display_name, k.lifecycle_state) for k in found.data]

    async def create_secret_key(self, display_name: str) -> tuple[str, str]:
        details = self.identity_models.CreateCustomerSecretKeyDetails(display_name=display_name)
        made = await self.cloud._call(f"identity.create_customer_secret_key(user={self.user}, display_name={display_name})",
                                      self.cloud.identity.create_customer_secret_key, details, self.user,
                                      opc_retry_token=secrets.token_hex(16))  # a repeat answers the first key
        return str(made.data.id), str(made.data.key)


class DryRunStore:
    """Contacts nothing: says each call, answers as an empty tenancy would."""

    def __init__(self, cloud: DryRunCloud, user: str, region: str) -> None:
        self.cloud = cloud
        self.user = user
        self.region = region

    def _say(self, call: str) -> None:
        self.cloud._log_call(call)

    async def namespace(self) -> str:
        self._say("object_storage.get_namespace()")
        return "DRYRUN-NAMESPACE"

    async def bucket_exists(self, namespace: str, bucket: str) -> bool:
        self._say(f"object_storage.get_bucket(namespace={namespace}, bucket={bucket})")
        return False

    async def create_bucket(self, namespace: str, bucket: str, compartment_id: str) -> None:
        self._say(f"object_storage.create_bucket(namespace={namespace}, name={bucket}, compartment={compartment_id}, "
                  "public_access=NoPublicAccess)")

    async def secret_keys(self) -> list[SecretKey]:
        self._say(f"identity.list_customer_secret_keys(user={self.user})")
        return []

    async def create_secret_key(self, display_name: str) -> tuple[str, str]:
        self._say(f"identity.create_customer_secret_key(user={self.user}, display_name={display_name})")
        return "DRY-RUN-ACCESS-KEY", "DRY-RUN-SECRET"


async def _store(ctx: StageContext) -> ObjectStore | DryRunStore:
    from installer.cloud import cloud_for
    from installer.cloud.config import config_value

    cloud = await cloud_for(ctx)
    if isinstance(cloud, OciCloud):
        return ObjectStore(cloud)
    c = ctx.answers.cloud
    return DryRunStore(cloud, config_value(c.oci_config, c.oci_profile, "user") or "ocid1.user.dryrun",
                       config_value(c.oci_config, c.oci_profile, "region") or "dryrun-region-1")


async def oci_access(ctx: StageContext) -> tuple[BackupAccess, bool]:
    """The bucket (made when missing) and a Customer Secret Key for it (made when the state has
    none that still exists); whether anything was made."""
    from installer.cloud import CloudClient, compartment_of, explain

    bucket = ctx.answers.backup.bucket
    key_id, secret, known = ctx.facts.get(OCI_KEY_FACT), ctx.facts.get(OCI_SECRET_FACT), ctx.facts.get(OCI_ENDPOINT_FACT)
    if ctx.options.mode == "upgrade" and key_id and secret and isinstance(known, dict):
        # What an install made: the host's check of the bucket tells whether it still works.
        ctx.secret(str(secret))
        ctx.log(f"bucket {bucket} and its Customer Secret Key, as the install made them (no Oracle Cloud call)")
        return BackupAccess(str(known["endpoint"]), bucket, str(known["region"]), str(key_id), str(secret)), False
    store = await _store(ctx)
    compartment = compartment_of(ctx, ctx.resource(CloudClient).client)  # type: ignore[arg-type]
    changed = fresh = False
    try:
        namespace = await store.namespace()
        if await store.bucket_exists(namespace, bucket):
            ctx.log(f"bucket {bucket} is there (namespace {namespace})")
        else:
            await store.create_bucket(namespace, bucket, compartment)
            ctx.log(f"made the bucket {bucket} (namespace {namespace}, no public access)")
            changed = True
        keys = await store.secret_keys()
        ours = next((k for k in keys if k.id == key_id), None)
        if key_id and secret and ours is not None and ours.state == "ACTIVE":
            ctx.secret(str(secret))
            ctx.log(f"Customer Secret Key {ours.display_name!r} (made by an earlier run) is active")
        else:
            if key_id and not ctx.dry_run:
                ctx.log("the Customer Secret Key the state names is gone or inactive: making a new one")
            if len([k for k in keys if k.state == "ACTIVE"]) >= KEYS_PER_USER:
                raise StageError(
                    f"your Oracle Cloud user already has {KEYS_PER_USER} Customer Secret Keys, the most Oracle allows",
                    "delete one you no longer use (console: your profile > Customer secret keys), then rerun")
            key_id, secret = await store.create_secret_key(key_name(ctx.answers.domain.server_name))
            ctx.secret(secret)
            if not ctx.dry_run:
                ctx.remember(OCI_KEY_FACT, key_id)
                ctx.remember(OCI_SECRET_FACT, secret)  # Oracle shows it only now: the state (0600) keeps it
            ctx.log(f"made a Customer Secret Key for the bucket ({key_name(ctx.answers.domain.server_name)!r}); its secret "
                    "is kept in this run's state (0600) and on the host, root-only")
            changed = fresh = True
    except CloudError as exc:
        if exc.code == "LimitExceeded" or (exc.status in (400, 409) and "secret key" in exc.message.lower()):
            raise StageError(f"Oracle Cloud refused another Customer Secret Key: {exc.message}",
                             "delete one you no longer use (console: your profile > Customer secret keys), then rerun") from None
        raise explain(exc, ctx) from None
    endpoint = compat_endpoint(namespace, store.region)
    if not ctx.dry_run and ctx.facts.get(OCI_ENDPOINT_FACT) != {"endpoint": endpoint, "region": store.region}:
        ctx.remember(OCI_ENDPOINT_FACT, {"endpoint": endpoint, "region": store.region})
    return BackupAccess(endpoint, bucket, store.region, str(key_id), str(secret), fresh), changed


def s3_access(ctx: StageContext) -> BackupAccess:
    """The answers' S3 bucket, with the key pair from the environment variables they name."""
    b = ctx.answers.backup
    values = []
    for name in (b.s3_access_key_env, b.s3_secret_key_env):
        value = env_value(name)
        if not value and not ctx.dry_run:
            raise StageError(f"the environment variable {name} is not set: it holds the bucket's credentials",
                             f"export {name}=... in the shell that runs the installer, then rerun")
        if value and not _CREDENTIAL.fullmatch(value):
            raise StageError(f"the value of {name} is not an S3 key (letters, digits and + / = . _ ~ - only)")
        values.append(ctx.secret(value) if value else "DRY-RUN")
    ctx.log(f"bucket {b.bucket} at {b.s3_endpoint}; credentials from ${b.s3_access_key_env} and ${b.s3_secret_key_env}")
    return BackupAccess(b.s3_endpoint, b.bucket, region_of(b.s3_endpoint), values[0], values[1])


def region_of(endpoint: str) -> str:
    """The region an S3 endpoint's host names ("s3.eu-central-1.amazonaws.com", "s3.us-west-1.wasabisys.com"),
    which requests must be signed for; "" when it names none (the signature's default, us-east-1)."""
    import re
    from urllib.parse import urlsplit

    m = re.search(r"(?:^|\.)s3[.-]([a-z]{2,}-[a-z0-9-]*[a-z0-9])\.", urlsplit(endpoint).hostname or "")
    return m.group(1) if m else ""


async def bucket_access(ctx: StageContext) -> tuple[BackupAccess, bool]:
    if target_of(ctx.answers) == "oci":
        return await oci_access(ctx)
    return s3_access(ctx), False


__all__ = ["DryRunStore", "ObjectStore", "bucket_access", "compat_endpoint", "key_name", "region_of"]
