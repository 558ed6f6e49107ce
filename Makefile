# Run Sluice on this machine, or the Compose stack where a Docker engine is.
#   make start     the embedded default in the background (PID file, log file)
#   make status    is it running and ready?
#   make stop      SIGTERM, wait for it to finish its tasks, remove the PID file
#   make compose-up / compose-down   deploy/compose/compose.full.yaml
#   make image     docker build -t sluice:local .
#   make deploy-check   the offline checks of Dockerfile, Compose and Kubernetes files
# Settings (make start PROJECT=my/project LISTEN=0.0.0.0:9000):
SLUICE   ?= target/release/sluice
PROJECT  ?= examples/nightly-tsv
LISTEN   ?= 127.0.0.1:8080
RUN_DIR  ?= .sluice-run
COMPOSE_FILE ?= deploy/compose/compose.full.yaml
COMPOSE  ?= docker compose
PID := $(RUN_DIR)/sluice.pid
LOG := $(RUN_DIR)/sluice.log

.PHONY: start stop status restart compose-up compose-down compose-secrets image deploy-check

$(SLUICE):
	cargo build --release --locked --bin sluice

start: $(SLUICE)
	@mkdir -p $(RUN_DIR)
	@if [ -f $(PID) ] && kill -0 "$$(cat $(PID))" 2>/dev/null; then \
	  echo "sluice is already running (pid $$(cat $(PID))): http://$(LISTEN)/ui"; exit 0; fi; \
	nohup $(SLUICE) serve -p $(PROJECT) --listen $(LISTEN) >>$(LOG) 2>&1 </dev/null & \
	echo $$! >$(PID); \
	for i in $$(seq 1 300); do \
	  if $(SLUICE) healthcheck --timeout 1s http://$(LISTEN)/readyz >/dev/null 2>&1; then \
	    echo "sluice is running (pid $$(cat $(PID)), log $(LOG)): http://$(LISTEN)/ui"; exit 0; fi; \
	  if ! kill -0 "$$(cat $(PID))" 2>/dev/null; then \
	    echo "sluice stopped at start; the end of $(LOG):"; tail -n 20 $(LOG); rm -f $(PID); exit 1; fi; \
	  sleep 0.1; \
	done; echo "sluice is not ready after 30 s; see $(LOG)"; exit 1

stop:
	@if [ ! -f $(PID) ]; then echo "sluice is not running (no $(PID))"; exit 0; fi; \
	pid=$$(cat $(PID)); \
	if kill -TERM $$pid 2>/dev/null; then \
	  for i in $$(seq 1 450); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	  if kill -0 $$pid 2>/dev/null; then echo "sluice (pid $$pid) did not stop in 45 s"; exit 1; fi; \
	fi; \
	rm -f $(PID); echo "sluice stopped (pid $$pid)"

status:
	@if [ -f $(PID) ] && kill -0 "$$(cat $(PID))" 2>/dev/null; then \
	  if $(SLUICE) healthcheck --timeout 2s http://$(LISTEN)/readyz >/dev/null 2>&1; then r=ready; else r="not ready"; fi; \
	  echo "sluice is running (pid $$(cat $(PID)), $$r): http://$(LISTEN)/ui, log $(LOG)"; \
	else echo "sluice is not running"; exit 3; fi

restart: stop start

compose-secrets:
	@bash deploy/gen-secrets.sh

compose-up: compose-secrets
	$(COMPOSE) -f $(COMPOSE_FILE) up -d --build --wait

compose-down:
	$(COMPOSE) -f $(COMPOSE_FILE) down

image:
	docker build -t sluice:local .

deploy-check:
	bash scripts/deploy-check.sh
