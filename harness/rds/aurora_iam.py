"""IAM database authentication for Aurora clusters (``EnableIAMDatabaseAuthentication`` on CreateDBCluster /
ModifyDBCluster): every member's server sends the logins of ``rds_iam`` members to the run's IAM authority
(harness/rds/iamauth.py), which accepts tokens signed for any of the cluster's endpoints or the member's own."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.rds.aurora import AuroraCluster, AuroraClusters

logger = logging.getLogger(__name__)


class AuroraIam:
    """The Aurora side of IAM auth: pg_hba lines on the members of IAM-enabled clusters, and the realm of a login."""

    def __init__(self, ext: AuroraClusters) -> None:
        self.ext = ext
        self._attached = False

    def _authority(self) -> Any:
        from harness.rds.iamauth import authority

        found = authority(self.ext.rec)
        if not self._attached:
            found.resolvers.append(self.realm)
            self._attached = True
        return found

    def check_available(self) -> None:
        """HarnessError with the fix when IAM auth cannot run here (it needs root for its PAM service)."""
        from harness.rds.iamauth_pam import IamAuthUnavailable

        try:
            self._authority().check_available()
        except IamAuthUnavailable as exc:
            raise HarnessError(str(exc)) from None

    def set_enabled(self, cluster: AuroraCluster, wanted: bool) -> None:
        with self.ext.rec.aws.lock:
            record = self.ext.rec.aws.backend("rds", cluster.region).clusters.get(cluster.identifier)
            if record is not None:
                record.iam_auth = wanted

    def sync(self, cluster: AuroraCluster) -> None:
        """Every member's pg_hba.conf as the cluster's setting says (members cloned meanwhile have plain ones)."""
        if not self.ext.iam_enabled(cluster) and not cluster.iam_applied:
            return
        from harness.rds.iamauth import write_hba

        enabled = self.ext.iam_enabled(cluster)
        service = self._authority().service() if enabled else None
        for member in list(cluster.members.values()):
            host = member.host
            if host is not None and host.cluster.data_dir.exists():
                write_hba(host, service)
        cluster.iam_applied = enabled

    def realm(self, cwd: Path) -> Any:
        """The realm of a login arriving at the server whose data dir is ``cwd``: one of an IAM-enabled cluster's
        members. Tokens may name the member's instance endpoint or the cluster's writer, reader or custom ones."""
        from harness.rds.iamauth import Realm

        with self.ext.lock:
            clusters = list(self.ext.clusters.values())
        for cluster in clusters:
            for member in list(cluster.members.values()):
                host = member.host
                if host is None or not _same(host.cluster.data_dir, cwd):
                    continue
                if not self.ext.iam_enabled(cluster):
                    return None
                names = (cluster.writer_dns, cluster.reader_dns, *(e.dns_name for e in cluster.endpoints.values()))
                return Realm(f"cluster:{cluster.region}/{cluster.identifier}/{member.identifier}", member.dns_name,
                             cluster.port, cluster.region, aliases=tuple(n.lower() for n in names))
        return None


def _same(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return a.resolve() == b.resolve()
    return False
