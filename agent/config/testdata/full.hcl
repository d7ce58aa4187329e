datacenter = "EU-West"
node_name  = "web-01"
node_id    = "8f4c2b9e-5d3a-4b1c-9e7f-2a6d8c0b1e3f"
data_dir   = "/var/lib/trellis"
server     = true
bootstrap  = true
bind_addr  = "10.0.0.5"
client_addr = "127.0.0.1 10.0.0.5"
domain     = "mesh.internal"
log_level  = "DEBUG"
log_json   = true
retry_join = ["10.0.0.6", "10.0.0.7:8301"]
retry_interval = "15s"
encrypt    = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
reconnect_timeout = "8h"

autopilot {
  server_stabilization_time = "20s"
}

performance {
  raft_multiplier  = 3
  rpc_hold_timeout = "10s"
  leave_drain_time = "2s"
}

gossip_lan {
  probe_interval = "1s"
  suspicion_mult = 4
}

ports {
  http     = 18500
  dns      = -1
  server   = 18300
  serf_lan = 18301
  sidecar_min_port = 22000
  sidecar_max_port = 22099
}

ui_config {
  enabled = true
}

connect {
  enabled                  = true
  default_intention_policy = "deny"
  ca_provider              = "consul"
  ca_config {
    leaf_cert_ttl = "24h"
  }
}

telemetry {
  mesh_metrics_interval = "10s"
}

dns_config {
  node_ttl         = "30s"
  service_ttl      = "10s"
  udp_answer_limit = 5
}

service {
  name = "web"
  port = 8080
  tags = ["v1", "primary"]
  meta = { env = "prod" }
  weights {
    passing = 10
    warning = 1
  }
  check {
    http     = "http://127.0.0.1:8080/health"
    interval = "10s"
    timeout  = "2s"
    header   = { "X-Probe" = ["trellis"] }
  }
}

services {
  id   = "db-1"
  name = "db"
  port = 5432
  checks = [
    { tcp = "127.0.0.1:5432", interval = "5s" },
    { id = "db-ttl", ttl = "30s", deregister_critical_service_after = "10m" },
  ]
}

service {
  name = "shop"
  port = 9000
  connect {
    sidecar_service {
      port = 22001
      proxy {
        upstreams = [
          { destination_name = "db", local_bind_port = 5433 },
          { destination_name = "cache", local_bind_address = "127.0.0.2", local_bind_port = 6380 },
        ]
      }
    }
  }
}
