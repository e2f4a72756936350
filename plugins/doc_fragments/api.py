# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment(object):
    # The PVE API connection options shared by every module of the shadownet.proxmox.api action group.
    DOCUMENTATION = r'''
options:
  api_host:
    description:
      - Host name or address of a PVE node (or a load balancer in front of the cluster's API).
      - Falls back to the E(PROXMOX_HOST) environment variable.
    type: str
    required: true
  api_port:
    description:
      - TCP port of the PVE API. Falls back to E(PROXMOX_PORT).
    type: int
    default: 8006
  api_user:
    description:
      - PVE user, C(user@realm). With a token, the user that owns it. Falls back to E(PROXMOX_USER).
    type: str
    default: root@pam
  api_password:
    description:
      - Password of O(api_user). Falls back to E(PROXMOX_PASSWORD).
      - Mutually exclusive with O(api_token_secret); give a token or a password, never both.
      - Password logins use tickets; an expired ticket is renewed once, automatically.
      - A user with two-factor authentication is refused before any second factor is sent (PVE counts failed ones
        and locks the user's TOTP after too many); use an API token for unattended runs.
    type: str
  api_token_id:
    description:
      - Name of the API token (the part after C(!)), or the full id C(user@realm!name).
        Falls back to E(PROXMOX_TOKEN_ID).
    type: str
  api_token_secret:
    description:
      - Secret of the API token. Falls back to E(PROXMOX_TOKEN_SECRET).
    type: str
  validate_certs:
    description:
      - Verify the API's TLS certificate. Keep it on; give O(ca_path) for a cluster with its own CA.
      - Falls back to E(PROXMOX_VALIDATE_CERTS).
    type: bool
    default: true
  ca_path:
    description:
      - PEM file with the CA (or the certificate) that signed the PVE API certificate, for example a copy of
        C(/etc/pve/pve-root-ca.pem). Falls back to E(PROXMOX_CA_PATH).
    type: path
  api_timeout:
    description:
      - Seconds to wait for one HTTP request. Tasks (clones, starts) are waited for separately, by wall clock.
      - Falls back to E(PROXMOX_TIMEOUT).
    type: int
    default: 30
requirements:
  - proxmoxer >= 2.1
  - requests
notes:
  - Every module of this collection that talks to the PVE API is in the action group
    C(shadownet.proxmox.api), so the connection options can be set once for all of them with
    C(module_defaults) and the key C(group/shadownet.proxmox.api).
  - Lock timeouts (C(can't lock file ... got timeout) and C(VM is locked)) are retried until the lock is released,
    within a bounded time. Reads are retried on HTTP 5xx and dropped connections. A write whose connection
    dropped is never repeated blindly; the module re-reads the cluster to learn whether it happened.
'''
