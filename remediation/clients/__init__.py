"""One small interface per external system, each with one real implementation.

Every implementation is handed its transport (an httpx.Client, a boto3 client, a
DSN, SSH key and known_hosts paths, a git workdir) so tests can reach the seam.
"""

from remediation.clients._http import DEFAULT_TIMEOUT, HealthResult, make_http_client
from remediation.clients.admin_api import AdminApi, Brand, BrandConfig, GlobalVar, HttpxAdminApi, Maintenance
from remediation.clients.database import Database, PsycopgDatabase, Transaction
from remediation.clients.evidence_store import (
    EvidenceStore,
    ObjectSummary,
    S3EvidenceStore,
    StoredObject,
    make_s3_client,
)
from remediation.clients.gateway import Gateway, HttpxGateway, ProviderIngress, WalletReply
from remediation.clients.git_repo import CliGitRepo, GitRepo
from remediation.clients.remote_host import CommandResult, ParamikoHost, RemoteHost

__all__ = [
    "DEFAULT_TIMEOUT",
    "AdminApi",
    "Brand",
    "BrandConfig",
    "CliGitRepo",
    "CommandResult",
    "Database",
    "EvidenceStore",
    "Gateway",
    "GitRepo",
    "GlobalVar",
    "HealthResult",
    "HttpxAdminApi",
    "HttpxGateway",
    "Maintenance",
    "ObjectSummary",
    "ParamikoHost",
    "ProviderIngress",
    "PsycopgDatabase",
    "RemoteHost",
    "S3EvidenceStore",
    "StoredObject",
    "Transaction",
    "WalletReply",
    "make_http_client",
    "make_s3_client",
]
