// AKS cluster: Entra ID integration with Azure RBAC and no local accounts, OIDC issuer and workload identity,
// Azure CNI overlay with Cilium network policy, autoscaling node pools (system; optional on-demand serving pool;
// spot training pool that scales to zero), managed Prometheus metrics add-on and Container Insights, Key Vault
// CSI driver with rotation, automatic upgrades, ephemeral OS disks and encryption at host.

@description('Name of the cluster.')
@minLength(3)
@maxLength(63)
param name string

@description('Azure region of the cluster.')
@minLength(3)
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Kubernetes version; empty picks the region\'s default version.')
param kubernetesVersion string = ''

@description('AKS pricing tier: Free (dev, no SLA), Standard (uptime SLA) or Premium (long-term support).')
@allowed([
  'Free'
  'Standard'
  'Premium'
])
param skuTier string = 'Standard'

@description('Resource ID of the subnet the nodes join.')
@minLength(1)
param nodeSubnetId string

@description('Availability zones of the node pools (empty: no zone pinning, for regions or sizes without zones).')
param availabilityZones array = [
  '1'
  '2'
  '3'
]

@description('CIDR ranges allowed to reach the API server (office, VPN and CI runner egress).')
@minLength(1)
param authorizedIpRanges array

@description('Entra ID group object IDs that get cluster-admin through Azure RBAC.')
param adminGroupObjectIds array = []

@description('VM size of the system pool (needs a temp disk at least osDiskSizeGb for ephemeral OS disks).')
@minLength(1)
param systemPoolVmSize string = 'Standard_D4ds_v5'

@description('Minimum node count of the system pool.')
@minValue(1)
@maxValue(100)
param systemPoolMinCount int = 2

@description('Maximum node count of the system pool.')
@minValue(1)
@maxValue(100)
param systemPoolMaxCount int = 5

@description('Ephemeral OS disk size in GiB of every pool (must fit the VM size\'s temp disk).')
@minValue(30)
@maxValue(2048)
param osDiskSizeGb int = 128

@description('Create a dedicated on-demand pool for the model server; otherwise it runs on the system pool.')
param enableServingPool bool = true

@description('VM size of the serving pool.')
@minLength(1)
param servingPoolVmSize string = 'Standard_D4ds_v5'

@description('Minimum node count of the serving pool.')
@minValue(0)
@maxValue(100)
param servingPoolMinCount int = 2

@description('Maximum node count of the serving pool.')
@minValue(1)
@maxValue(100)
param servingPoolMaxCount int = 10

@description('Create the spot training pool (pipeline runs). It always scales down to zero nodes when idle.')
param enableTrainingPool bool = true

@description('VM size of the spot training pool.')
@minLength(1)
param trainingPoolVmSize string = 'Standard_D8ds_v5'

@description('Maximum node count of the spot training pool.')
@minValue(1)
@maxValue(100)
param trainingPoolMaxCount int = 4

@description('Maximum pods per node.')
@minValue(50)
@maxValue(250)
param maxPods int = 110

@description('Resource ID of the Log Analytics workspace (Container Insights, audit logs).')
@minLength(1)
param logAnalyticsWorkspaceId string

@description('Resource ID of the Container Insights data collection rule.')
@minLength(1)
param containerInsightsRuleId string

@description('Resource ID of the managed Prometheus data collection rule.')
@minLength(1)
param prometheusRuleId string

@description('Resource ID of the managed Prometheus data collection endpoint.')
@minLength(1)
param prometheusEndpointId string

var networkContributorRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4d97b98b-1d4f-4787-a291-c67834d212e7')
var zones = empty(availabilityZones) ? null : availabilityZones
var subnetParts = split(nodeSubnetId, '/')
var systemTaints = [
  'CriticalAddonsOnly=true:NoSchedule'
]

resource nodeVnet 'Microsoft.Network/virtualNetworks@2024-05-01' existing = {
  name: subnetParts[8]
}

resource nodeSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: nodeVnet
  name: subnetParts[10]
}

// Control-plane identity, created first so it can be given Network Contributor on the node subnet.
resource controlPlaneIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${name}-control-plane'
  location: location
  tags: tags
}

resource subnetAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(nodeSubnet.id, controlPlaneIdentity.id, networkContributorRoleId)
  scope: nodeSubnet
  properties: {
    principalId: controlPlaneIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: networkContributorRoleId
  }
}

resource cluster 'Microsoft.ContainerService/managedClusters@2025-02-01' = {
  // checkov:skip=CKV_AZURE_8: the Kubernetes dashboard add-on no longer exists in AKS (removed for 1.19+); there is nothing to disable.
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Base'
    tier: skuTier
  }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${controlPlaneIdentity.id}': {}
    }
  }
  dependsOn: [
    subnetAssignment
  ]
  properties: {
    kubernetesVersion: empty(kubernetesVersion) ? null : kubernetesVersion
    dnsPrefix: name
    enableRBAC: true
    disableLocalAccounts: true
    aadProfile: {
      managed: true
      enableAzureRBAC: true
      tenantID: tenant().tenantId
      adminGroupObjectIDs: adminGroupObjectIds
    }
    oidcIssuerProfile: {
      enabled: true
    }
    securityProfile: {
      workloadIdentity: {
        enabled: true
      }
      imageCleaner: {
        enabled: true
        intervalHours: 168
      }
    }
    apiServerAccessProfile: {
      authorizedIPRanges: authorizedIpRanges
    }
    autoUpgradeProfile: {
      upgradeChannel: 'stable'
      nodeOSUpgradeChannel: 'NodeImage'
    }
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      networkDataplane: 'cilium'
      networkPolicy: 'cilium'
      podCidr: '10.244.0.0/16'
      serviceCidr: '10.0.0.0/16'
      dnsServiceIP: '10.0.0.10'
      loadBalancerSku: 'standard'
      outboundType: 'loadBalancer'
    }
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        vmSize: systemPoolVmSize
        osType: 'Linux'
        osSKU: 'AzureLinux'
        type: 'VirtualMachineScaleSets'
        enableAutoScaling: true
        count: systemPoolMinCount
        minCount: systemPoolMinCount
        maxCount: systemPoolMaxCount
        maxPods: maxPods
        osDiskType: 'Ephemeral'
        osDiskSizeGB: osDiskSizeGb
        enableEncryptionAtHost: true
        vnetSubnetID: nodeSubnetId
        availabilityZones: zones
        upgradeSettings: {
          maxSurge: '33%'
        }
        // With a dedicated serving pool the system pool only runs system add-ons.
        nodeTaints: enableServingPool ? systemTaints : []
      }
    ]
    autoScalerProfile: {
      expander: 'least-waste'
      'scale-down-unneeded-time': '5m'
      'scale-down-delay-after-add': '5m'
      'skip-nodes-with-local-storage': 'false'
    }
    azureMonitorProfile: {
      metrics: {
        enabled: true
        kubeStateMetrics: {
          metricLabelsAllowlist: ''
          metricAnnotationsAllowList: ''
        }
      }
    }
    addonProfiles: {
      omsagent: {
        enabled: true
        config: {
          logAnalyticsWorkspaceResourceID: logAnalyticsWorkspaceId
          useAADAuth: 'true'
        }
      }
      // checkov:skip=CKV_AZURE_172: false positive: add-on config values are strings in the AKS API; enableSecretRotation 'true' turns rotation on.
      azureKeyvaultSecretsProvider: {
        enabled: true
        config: {
          enableSecretRotation: 'true'
          rotationPollInterval: '2m'
        }
      }
      azurepolicy: {
        enabled: true
      }
    }
  }
}

// Pools other than the system pool are separate agentPools resources, so they change independently.
resource servingPool 'Microsoft.ContainerService/managedClusters/agentPools@2025-02-01' = if (enableServingPool) {
  // checkov:skip=CKV_AZURE_168: false positive: checkov does not evaluate conditional resources; maxPods is the maxPods parameter (@minValue(50)), asserted by tests/unit/test_bicep.py.
  // checkov:skip=CKV_AZURE_227: false positive: checkov does not evaluate conditional resources; enableEncryptionAtHost is true, asserted by tests/unit/test_bicep.py.
  parent: cluster
  name: 'serving'
  properties: {
    mode: 'User'
    vmSize: servingPoolVmSize
    osType: 'Linux'
    osSKU: 'AzureLinux'
    type: 'VirtualMachineScaleSets'
    enableAutoScaling: true
    maxPods: maxPods
    osDiskType: 'Ephemeral'
    osDiskSizeGB: osDiskSizeGb
    enableEncryptionAtHost: true
    vnetSubnetID: nodeSubnetId
    availabilityZones: zones
    count: servingPoolMinCount
    minCount: servingPoolMinCount
    maxCount: servingPoolMaxCount
    upgradeSettings: {
      maxSurge: '33%'
    }
    nodeLabels: {
      'fraud-detection/pool': 'serving'
    }
  }
}

// Spot pool for training: scales to zero (minCount 0) and starts at zero nodes; evicted nodes are deleted.
// Pipeline pods select fraud-detection/pool=training and tolerate the spot taint.
resource trainingPool 'Microsoft.ContainerService/managedClusters/agentPools@2025-02-01' = if (enableTrainingPool) {
  // checkov:skip=CKV_AZURE_168: false positive: checkov does not evaluate conditional resources; maxPods is the maxPods parameter (@minValue(50)), asserted by tests/unit/test_bicep.py.
  // checkov:skip=CKV_AZURE_227: false positive: checkov does not evaluate conditional resources; enableEncryptionAtHost is true, asserted by tests/unit/test_bicep.py.
  parent: cluster
  name: 'training'
  dependsOn: [
    servingPool
  ]
  properties: {
    mode: 'User'
    vmSize: trainingPoolVmSize
    osType: 'Linux'
    osSKU: 'AzureLinux'
    type: 'VirtualMachineScaleSets'
    enableAutoScaling: true
    maxPods: maxPods
    osDiskType: 'Ephemeral'
    osDiskSizeGB: osDiskSizeGb
    enableEncryptionAtHost: true
    vnetSubnetID: nodeSubnetId
    availabilityZones: zones
    scaleSetPriority: 'Spot'
    scaleSetEvictionPolicy: 'Delete'
    spotMaxPrice: -1
    count: 0
    minCount: 0
    maxCount: trainingPoolMaxCount
    nodeLabels: {
      'fraud-detection/pool': 'training'
    }
    nodeTaints: [
      'kubernetes.azure.com/scalesetpriority=spot:NoSchedule'
    ]
  }
}

resource prometheusEndpointAssociation 'Microsoft.Insights/dataCollectionRuleAssociations@2023-03-11' = {
  name: 'configurationAccessEndpoint'
  scope: cluster
  properties: {
    dataCollectionEndpointId: prometheusEndpointId
  }
}

resource prometheusRuleAssociation 'Microsoft.Insights/dataCollectionRuleAssociations@2023-03-11' = {
  name: 'MSProm-${location}-${name}'
  scope: cluster
  properties: {
    dataCollectionRuleId: prometheusRuleId
    description: 'Managed Prometheus scrape of this cluster.'
  }
}

resource containerInsightsAssociation 'Microsoft.Insights/dataCollectionRuleAssociations@2023-03-11' = {
  name: 'ContainerInsightsExtension'
  scope: cluster
  properties: {
    dataCollectionRuleId: containerInsightsRuleId
    description: 'Container Insights logs of this cluster.'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: cluster
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'kube-audit-admin'
        enabled: true
      }
      {
        category: 'guard'
        enabled: true
      }
    ]
  }
}

@description('Resource ID of the cluster.')
output id string = cluster.id

@description('Name of the cluster.')
output name string = cluster.name

@description('OIDC issuer URL used by the workload identity federated credentials.')
output oidcIssuerUrl string = cluster.properties.oidcIssuerProfile.issuerURL

@description('Object ID of the kubelet identity (gets AcrPull).')
output kubeletObjectId string = cluster.properties.identityProfile.kubeletidentity.objectId
