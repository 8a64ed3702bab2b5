# Builds realtime-gateway and realtimectl, then runs them on a slim Debian with hiredis.
FROM swift:6.1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libhiredis-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product realtime-gateway \
 && swift build -c release --static-swift-stdlib --product realtimectl \
 && mkdir -p /out && cp .build/release/realtime-gateway .build/release/realtimectl /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libhiredis0.14 libstdc++6 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
ENV REALTIME_HOST=0.0.0.0 REALTIME_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=2s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/realtime-gateway"]
