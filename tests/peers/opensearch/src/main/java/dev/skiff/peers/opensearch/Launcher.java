package dev.skiff.peers.opensearch;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.opensearch.Version;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * Runs one OpenSearch node in this JVM, serving the REST API on 127.0.0.1, until SIGTERM.
 *
 * <p>Usage: {@code java -jar opensearch-launcher.jar HOME HTTP_PORT TRANSPORT_PORT}. The node keeps
 * its data under {@code HOME/data}; a restart on the same home finds its indices again.
 *
 * <p>This replaces the distribution's {@code bin/opensearch}, which Maven Central does not serve:
 * the node and its modules come from Maven jars and the modules are loaded from the classpath, as
 * OpenSearch's own {@code MockNode} does in its test framework. Unlike the distribution's bootstrap,
 * no security manager is installed and no bootstrap checks run (they only apply to nodes bound to
 * non-loopback addresses anyway).
 */
public final class Launcher {
    /** The modules the node loads: HTTP transport, the stock analyzers, the extra field types. */
    private static final Collection<Class<? extends Plugin>> MODULES =
            List.of(Netty4Plugin.class, CommonAnalysisPlugin.class, MapperExtrasPlugin.class);

    private Launcher() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: Launcher HOME HTTP_PORT TRANSPORT_PORT");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        int httpPort = Integer.parseInt(args[1]);
        int transportPort = Integer.parseInt(args[2]);

        // What the distribution's jvm.options sets; Netty and log4j read these when first loaded,
        // so they must be set before any of their classes is touched.
        System.setProperty("io.netty.noUnsafe", "true");
        System.setProperty("io.netty.noKeySetOptimization", "true");
        System.setProperty("io.netty.recycler.maxCapacityPerThread", "0");
        System.setProperty("log4j2.disable.jmx", "true");
        // Our shutdown hook stops log4j itself, after the node has logged its shutdown.
        System.setProperty("log4j.shutdownHookEnabled", "false");

        Path config = home.resolve("config");
        Files.createDirectories(config);
        Settings settings = Settings.builder()
                .put("cluster.name", "skiff-test")
                .put("node.name", "skiff-opensearch")
                .put("path.home", home.toString())
                .put("path.data", home.resolve("data").toString())
                .put("path.logs", home.resolve("logs").toString())
                .put("network.host", "127.0.0.1")
                .put("http.port", httpPort)
                .put("transport.port", transportPort)
                .put("http.type", "netty4")
                .put("transport.type", "netty4")
                .put("discovery.type", "single-node")
                // A test machine's disk may be fuller than the watermarks; tests must not turn
                // read-only because of it.
                .put("cluster.routing.allocation.disk.threshold_enabled", false)
                .build();
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
                settings, Map.of(), config, () -> "skiff-opensearch");

        Logger log = LogManager.getLogger(Launcher.class);
        EmbeddedNode node = new EmbeddedNode(environment);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                if (!node.awaitClose(10, TimeUnit.SECONDS)) {
                    log.warn("node did not close within 10s");
                }
            } catch (Exception e) {
                log.error("closing the node failed", e);
            } finally {
                LogManager.shutdown();
                stopped.countDown();
            }
        }, "skiff-opensearch-shutdown"));

        node.start();
        // One node cannot hold replicas, so by default every new index would leave the cluster
        // yellow. This default is read from the cluster's settings, not the node's.
        node.client().admin().cluster().prepareUpdateSettings()
                .setPersistentSettings(Settings.builder().put("cluster.default_number_of_replicas", 0))
                .get();
        log.info("OpenSearch {} serving http://127.0.0.1:{}", Version.CURRENT, httpPort);
        // The node's threads are daemons: keep the JVM alive until the shutdown hook has run.
        stopped.await();
    }

    /** A node with its modules on the classpath; the constructor that accepts them is protected. */
    private static final class EmbeddedNode extends Node {
        EmbeddedNode(Environment environment) {
            super(environment, MODULES, true);
        }
    }
}
