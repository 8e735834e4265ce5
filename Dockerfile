# chio-authz container image: Node.js 20, the package built in /app, runs as uid 65532.
#   docker build -t registry.example.com/chio-authz:0.1.0 .
# The Deployment in deploy/ runs:
#   node --single-threaded-gc bin/chio.js serve --config /etc/chio/chio.yaml
FROM node:20-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 builds a native addon when no prebuilt binary matches
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY bin ./bin
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY demo ./demo
COPY proto ./proto
COPY package.json ./
USER 65532:65532
EXPOSE 9191 9192
ENTRYPOINT ["node", "--single-threaded-gc", "bin/chio.js"]
CMD ["serve", "--config", "/etc/chio/chio.yaml"]
